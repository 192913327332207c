"""The HTTP layer of the service, one concern per module.

- `errors`: the one error base class (status, code, detail, headers) that imaging, the pipeline and the API
  raise, and the answers for failures of model calls;
- `upload`: reading the `xray` file of a request, size-capped;
- `schemas`: the answers (`ScoreAnswer`, `ErrorAnswer`, ...), which the pipeline builds and FastAPI validates;
- `middleware`: request ids on every answer, and a JSON 500 for anything unforeseen;
- `service`: `ScoringService`, the models as timed stages, the admission gate; no HTTP in it;
- `routes`: the FastAPI app over a `ScoringService` (`create_app`), with its exception handler, and `/docs`
  served from assets shipped in a package (no outside address).

Importing this package imports nothing heavy: `deepxray.imaging` takes its error base class from here.
"""
