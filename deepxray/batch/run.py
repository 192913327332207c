"""`deepxray score`: the films of the inputs, those already in the output skipped, the rest scored by an engine
(Ray Data here, or a running service with `--url`), each film's rows appended as it finishes, progress on the
terminal, and a summary at the end. Research use only."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from deepxray.batch.inputs import Film, collect_films, file_id
from deepxray.batch.output import Output
from deepxray.batch.rows import FAILED, SCORED
from deepxray.settings import Settings


@dataclass
class ScoreRun:
    """What to score, where to write it, and with which engine."""

    inputs: list[str]
    out: Path
    url: str | None = None  # a running service; None: Ray Data
    token: str | None = field(default=None, repr=False)
    address: str | None = None  # a Ray cluster for Ray Data (`auto`, `ray://host:10001`); None: a Ray of its own
    models_dir: Path | None = None
    workers: int | None = None
    batch_size: int | None = None
    concurrency: int | None = None  # --url: films in flight (None: remote.DEFAULT_CONCURRENCY)
    overwrite: bool = False
    patient_key: str | None = None
    progress: bool = True


@dataclass
class Summary:
    films: int = 0  # films the inputs name
    skipped: int = 0  # already in the output, or the same content listed again
    scored: int = 0  # films with at least one hand scored
    hands: int = 0
    refused: Counter = field(default_factory=Counter)  # by error code
    failed: Counter = field(default_factory=Counter)
    interrupted: bool = False
    seconds: float = 0.0

    def count(self, rows: list[dict]) -> int:
        """Counts a block of rows; returns the number of films in it."""
        films: dict = {}
        for row in rows:
            films.setdefault((row["source"], row["image_id"]), []).append(row)
        for film in films.values():
            scored = [row for row in film if row["status"] == SCORED]
            self.hands += len(scored)
            if scored:
                self.scored += 1
            elif film[0]["status"] == FAILED:
                self.failed[film[0]["error"]] += 1
            else:
                self.refused[film[0]["error"]] += 1
        return len(films)

    def text(self, out: Path) -> str:
        def by_reason(counts: Counter) -> str:
            return f" ({', '.join(f'{code} {n}' for code, n in counts.most_common())})" if counts else ""

        done = self.scored + sum(self.refused.values()) + sum(self.failed.values())
        lines = [
            f"{'interrupted after' if self.interrupted else 'scored'} {done} of {self.films - self.skipped} films "
            f"in {self.seconds:.0f} s ({done / max(self.seconds, 1e-9):.2f} films/s); {self.skipped} already in "
            f"{out} or listed twice",
            f"  scored: {self.scored} films, {self.hands} hands",
            f"  refused: {sum(self.refused.values())}{by_reason(self.refused)}",
            f"  failed: {sum(self.failed.values())}{by_reason(self.failed)}",
            f"wrote {out} (research use only; scores of models trained on synthetic images are not clinical findings)",
        ]
        if self.interrupted:
            lines.append("run the same command again to score the rest (what is in the output is kept)")
        return "\n".join(lines)


def films_to_score(films: list[Film], done: set[str], summary: Summary) -> list[tuple[Film, str | None]]:
    """The films not in the output yet, with their image ids (hashed in threads); a content listed twice once."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(lambda film: file_id(film.source), films))
    todo, seen = [], set(done)
    for film, image in zip(films, ids, strict=True):
        if image is not None and image in seen:
            summary.skipped += 1
            continue
        if image is not None:
            seen.add(image)
        todo.append((film, image))
    return todo


def rows_from_engine(run: ScoreRun, todo: list[tuple[Film, str | None]], settings: Settings) -> Iterator[list[dict]]:
    if run.url:
        from deepxray.batch.remote import DEFAULT_CONCURRENCY, score_films_via_service

        yield from score_films_via_service(todo, run.url, run.token, settings.pseudonym_salt,
                                           run.concurrency or DEFAULT_CONCURRENCY)  # fmt: skip
        return
    import ray

    from deepxray.batch.local import DEFAULT_BATCH_SIZE, score_films

    if run.address:
        ray.init(address=run.address, log_to_driver=False)
    else:  # a Ray of its own on this machine ("local": never one that RAY_ADDRESS points at)
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        yield from score_films(todo, run.models_dir, settings.model_dump(mode="json", exclude_unset=True),
                               settings.pseudonym_salt, run.workers, run.batch_size or DEFAULT_BATCH_SIZE)  # fmt: skip
    finally:
        ray.shutdown()


def score_registry(run: ScoreRun) -> Summary:
    """Scores what `run` names into `run.out`; Ctrl-C stops it with the output valid and the summary printed."""
    from tqdm import tqdm

    start = time.perf_counter()
    summary = Summary()
    settings = Settings()
    if not run.url:  # a folder without the three models is one line now, not a traceback from every actor later
        from deepxray.models.registry import check_model_set

        run.models_dir = check_model_set(run.models_dir or settings.models_folder(), role="--models folder")
    films = collect_films(run.inputs, run.patient_key)
    if not films:
        raise ValueError(f"no files to score in {', '.join(map(str, run.inputs))}")
    summary.films = len(films)
    output = Output(run.out, run.overwrite)
    todo = films_to_score(films, output.done, summary)
    bar = tqdm(total=len(todo), unit="film", desc="scoring", disable=not run.progress, file=sys.stderr)
    try:
        for rows in rows_from_engine(run, todo, settings) if todo else ():
            output.append(rows)
            bar.update(summary.count(rows))
            bar.set_postfix(refused=sum(summary.refused.values()), failed=sum(summary.failed.values()))
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        output.close()
        summary.seconds = time.perf_counter() - start
    return summary
