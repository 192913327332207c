"""The monolith baseline: the same models, preprocessing and HTTP API in plain FastAPI processes, without Ray.

    python -m loadtests.monolith --workers 2 --port 8100
    uvicorn loadtests.monolith:create_monolith --factory --workers 2 --port 8100   # the same, by hand

Each uvicorn worker process loads the three models in-process (`deepxray.models.runtime.local_models`) and
serves the routes of the Ray ingress (`deepxray.api.routes.create_app` over a `deepxray.api.service.ScoringService`:
the same upload handling, the same `deepxray.pipeline.score_radiograph`, the same answers and error statuses),
with models called in-process instead of through deployment handles. That makes the comparison with the served
application fair: the only difference is Ray Serve (its proxy, the hops between deployments, its scheduling), not
the code that scores. Nothing here imports Ray.

Threads: workers x threads = cores. `--workers` (default: the cores) sets each worker's TensorFlow and OpenCV
threads to cores // workers (at least one). Settings (models, thresholds, limits) are the service's
`deepxray.settings.Settings`, from `DEEPXRAY_<NAME>` variables as for the served application.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path

THREADS_ENV = "DEEPXRAY_MONOLITH_THREADS"
READY_LINE = "monolith worker ready"


class LocalBackend:
    """The ingress's `deepxray.api.service.ModelBackend` over models loaded in this process (loaded by `load`, at startup)."""

    def __init__(self, models_dir: Path, threads: int):
        self.models_dir = Path(models_dir)
        self.threads = threads
        self.models = None
        self._cards: dict[str, dict] = {}

    def load(self) -> None:
        import cv2

        from deepxray.models.artifacts import read_card
        from deepxray.models.runtime import local_models

        cv2.setNumThreads(self.threads)  # decoding and resizing share the worker's cores with TensorFlow
        self.models = local_models(self.models_dir, self.threads)
        self._cards = {name: asdict(read_card(self.models_dir / name)) for name in self.models.versions}

    async def classify(self, views):
        return await self.models.classify(views), self.models.versions["body_part"]

    async def detect(self, view):
        return await self.models.detect(view), self.models.versions["joint_detection"]

    async def score(self, crops):
        return await self.models.score(crops), self.models.versions["ratingen_score"]

    async def info(self) -> dict[str, dict]:
        if self.models is None:
            return {}
        return {
            name: {"name": name, "tag": tag, "ready": True, "threads": self.threads, "pid": os.getpid()}
            for name, tag in self.models.versions.items()
        }

    async def cards(self) -> dict[str, dict]:
        return dict(self._cards)


def worker_threads() -> int:
    return max(1, int(os.environ.get(THREADS_ENV) or os.cpu_count() or 1))


def create_monolith():
    """The app of one worker (a uvicorn `--factory`): the ingress's routes over in-process models."""
    from deepxray.api.routes import create_app
    from deepxray.api.service import ScoringService
    from deepxray.settings import Settings

    settings = Settings()  # DEEPXRAY_<NAME> variables, as the served application reads them
    threads = worker_threads()
    backend = LocalBackend(settings.models_folder(), threads)
    app = create_app(ScoringService(backend, settings))

    @asynccontextmanager
    async def lifespan(_app):
        await asyncio.to_thread(backend.load)  # uvicorn takes requests only once this is done
        # The line `loadtests.scaling` waits for, once per worker (uvicorn's own is at info level).
        print(f"{READY_LINE} pid={os.getpid()} threads={threads}", flush=True)
        yield

    app.router.lifespan_context = lifespan
    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--workers", type=int, default=cores, help="worker processes (default: the cores)")
    parser.add_argument("--cores", type=int, default=cores, help="cores to share out (default: this machine's)")
    parser.add_argument("--limit-concurrency", type=int, default=None, help="uvicorn's: 503 beyond this many")
    args = parser.parse_args(argv)
    threads = max(1, args.cores // args.workers)
    # Read by every worker's factory; OMP for any library that uses OpenMP (Ray sets it for its replicas too).
    os.environ[THREADS_ENV] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")  # as serve_config.yaml sets it for the ingress
    uvicorn.run(
        "loadtests.monolith:create_monolith",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        limit_concurrency=args.limit_concurrency,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
