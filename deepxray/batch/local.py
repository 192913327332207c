"""The default engine: Ray Data on this machine (or on a Ray cluster with `--address`), nothing to start.

The films' paths go into a dataset; `map_batches` hands them, `batch_size` at a time, to a pool of `workers`
actors (`FilmScorer`), each holding the three models in its own process and running `deepxray.pipeline` on every
film of its batch at once: the same steps, in the same code, as the service. Each actor reads its films itself,
so images never travel between processes (on a cluster the paths must be readable on every node, e.g. a shared
folder). The finished rows stream back to the caller block by block, each block whole films, as they finish.

Why one pool of actors holding all three models, rather than a pool per model: a film's steps depend on each
other's results (which turn of the film, whether it is a hand, where the crops are), so a pool per model would
need the pipeline's control flow written a second time around Ray Data's stages, and would move every film's
views and crops between processes. Within an actor, the films of a batch run concurrently: decoding overlaps
with the models, and the scorer's micro-batcher puts the crops of several films into one forward pass.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from deepxray.batch.context import study_context
from deepxray.batch.inputs import Film, read_film
from deepxray.batch.output import as_table
from deepxray.batch.rows import FAILED, film_rows

DEFAULT_BATCH_SIZE = 4


class FilmScorer:
    """A Ray Data actor: the three models loaded once, then batches of films scored (`__call__`)."""

    def __init__(self, models_dir: str, settings: dict, threads: int, salt: str | None):
        from deepxray.logs import keep_patient_data_out_of_logs
        from deepxray.models.runtime import local_models
        from deepxray.settings import Settings

        keep_patient_data_out_of_logs()
        self.models = local_models(Path(models_dir), threads=threads)
        self.settings = Settings(**settings)
        self.salt = salt
        self.loop = asyncio.new_event_loop()

    def __call__(self, batch: dict):
        films = [(Film(source, key or None), image) for source, key, image in
                 zip(batch["source"], batch["patient_key"], batch["image_id"], strict=True)]  # fmt: skip
        return as_table(self.loop.run_until_complete(self.score_all(films)))

    async def score_all(self, films: list[tuple[Film, str | None]]) -> list[dict]:
        scored = await asyncio.gather(*(self.score(film, image) for film, image in films))
        return [row for rows in scored for row in rows]

    async def score(self, film: Film, image_id: str | None) -> list[dict]:
        from deepxray.pipeline import answer_or_refusal

        start = time.perf_counter()
        data, unreadable = await asyncio.to_thread(read_film, film)
        if unreadable:
            return film_rows(film, image_id, 400, unreadable, time.perf_counter() - start)
        try:
            status, body = await answer_or_refusal(data, self.models, self.settings)
        except Exception as error:  # a failure of the scorer, not of the film: one row, and the run goes on
            status, body = 500, {"error": FAILED, "detail": f"Scoring failed ({type(error).__name__})."}
        context = await asyncio.to_thread(study_context, data, self.salt)
        return film_rows(film, image_id, status, body, time.perf_counter() - start, context)


def score_films(
    films: list[tuple[Film, str | None]],
    models_dir: Path,
    settings: dict,
    salt: str | None,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cpus_per_worker: float = 1.0,
) -> Iterator[list[dict]]:
    """Rows of the films (with their image ids), a block of whole films at a time, from Ray Data on the Ray this
    process is connected to (`ray.init` first). `workers` actors (default: one per CPU of the cluster), each with
    `cpus_per_worker` CPUs and as many TensorFlow threads."""
    import ray

    workers = workers or max(1, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1) // cpus_per_worker))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # `deepxray score` shows its own progress, and Ray Data's notes go:
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    items = [{"source": film.source, "patient_key": film.patient_key or "", "image_id": image}
             for film, image in films]  # fmt: skip
    dataset = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // batch_size)))
    dataset = dataset.map_batches(
        FilmScorer,
        fn_constructor_kwargs={
            "models_dir": str(models_dir),
            "settings": settings,
            "threads": max(1, round(cpus_per_worker)),
            "salt": salt,
        },  # fmt: skip
        batch_size=batch_size,
        concurrency=workers,
        num_cpus=cpus_per_worker,
        batch_format="numpy",
    )
    for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        yield block.to_pylist()
