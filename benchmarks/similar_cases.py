"""Similar-joint search of the case store: do the nearest joints have the query's score, and how fast is a query?

1. Scores `--films` phantom films of left and right hands (balanced grades, never seen in training) in-process,
   the way the service does (`deepxray.pipeline.score_radiograph` with the shipped models), and keeps each as a
   case through the ingress's own path (`deepxray.api.cases.CaseDesk`), embeddings included.
2. For every stored joint, asks `CaseStore.similar(k)` (other cases only) and prints the share of the k
   neighbours whose score is the query's, and within ±1 of it: against the model's scores (what a reader sees in
   the API) and against the phantoms' true grades (what the embedding really separates).
3. Fills the store up to `--joints` stored joints (copies of the scored cases' joints, their embeddings jittered)
   and prints the median and p95 time of one `similar` query over `--queries` queries.

The store is a SQLite file in a temporary folder, or `--database-url` (e.g. a PostgreSQL server: pgvector where
the server has the extension, NumPy otherwise; the method is printed). Figures measured on phantoms describe the
search on synthetic films, nothing clinical. Figures from this machine are in docs/benchmarks.md.

    python -m benchmarks.similar_cases --films 100 --joints 10000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np


def score_and_keep(films: Path, store, settings, models) -> tuple[dict, dict]:
    """Scores every film of the manifest in `films` and keeps it; returns the true grade and the embedding of each
    stored joint, by (case id, hand, joint)."""
    from deepxray.api.cases import CaseDesk
    from deepxray.phantoms.generate import read_manifest
    from deepxray.pipeline import FilmCapture, ScoringError, score_radiograph

    desk = CaseDesk(store, settings)
    truth, embeddings = {}, {}
    for record in read_manifest(films):
        data = (films / record["file"]).read_bytes()
        capture = FilmCapture()
        try:
            answer = asyncio.run(score_radiograph(data, models, settings, capture=capture))
        except ScoringError:
            continue  # a film the pipeline refuses is not kept by the service either
        case_id = desk.additions(answer, capture, data, draw=False)["case_id"]
        # The answer lists the hands left first, as the manifest does.
        for index, hand in enumerate(record["hands"]):
            for name, joint in hand["joints"].items():
                truth[(case_id, index, name)] = joint["score"]
                embeddings[(case_id, index, name)] = np.asarray(capture.embeddings[index][name], np.float32)
    return truth, embeddings


def neighbour_agreement(store, truth: dict, k: int) -> dict[str, float]:
    """Share of the k neighbours of every stored joint with the query's score, exactly and within ±1."""
    counts = dict.fromkeys(("model exact", "model ±1", "truth exact", "truth ±1", "neighbours"), 0)
    for case_id, hand, joint in truth:
        query = next(j for j in store.get(case_id).joints if j.hand == hand and j.joint == joint)
        for found in store.similar(case_id, hand, joint, k):
            true_found = truth[(found.case_id, found.hand, found.joint)]
            counts["model exact"] += found.score == query.score
            counts["model ±1"] += abs(found.score - query.score) <= 1
            counts["truth exact"] += true_found == truth[(case_id, hand, joint)]
            counts["truth ±1"] += abs(true_found - truth[(case_id, hand, joint)]) <= 1
            counts["neighbours"] += 1
    total = max(1, counts.pop("neighbours"))
    return {name: count / total for name, count in counts.items()}


def fill(store, embeddings: dict, joints: int, seed: int) -> int:
    """Copies of the stored cases, each joint's embedding jittered, until the store holds `joints` joints."""
    from deepxray.cases.records import JointRecord, NewCase

    rng = np.random.default_rng(seed)
    originals = [store.get(summary.case_id) for summary in store.list_cases(limit=10_000).items]
    stored = sum(len(case.joints) for case in originals)
    while stored < joints:
        case = originals[rng.integers(len(originals))]
        records = []
        for j in case.joints:
            embedding = embeddings[(case.case_id, j.hand, j.joint)]
            jittered = (embedding * rng.normal(1.0, 0.05, embedding.shape)).astype(np.float32)
            records.append(
                JointRecord(j.hand, j.laterality, j.joint, j.score, j.probabilities, tuple(j.center), jittered)
            )
        store.add(NewCase(answer=case.answer, models=case.models, film_size=case.film_size, joints=records))
        stored += len(records)
    return stored


def query_times(store, cases: list, queries: int, k: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(queries):
        case = cases[rng.integers(len(cases))]
        joint = case.joints[rng.integers(len(case.joints))]
        start = time.perf_counter()
        store.similar(case.case_id, joint.hand, joint.joint, 8)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=100, help="phantom films scored and kept")
    parser.add_argument("--joints", type=int, default=10_000, help="stored joints for the query-time figure")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--seed", type=int, default=4242, help="of the phantoms (the shipped models never saw it)")
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary folder")
    args = parser.parse_args()

    from deepxray.cases.store import CaseStore
    from deepxray.cli import main as deepxray
    from deepxray.models.runtime import local_models
    from deepxray.settings import Settings

    with tempfile.TemporaryDirectory(prefix="deepxray-similar-") as folder:
        films = Path(folder) / "films"
        deepxray(["phantoms", "generate", "--n", str(args.films), "--out", str(films), "--seed", str(args.seed),
                  "--body-parts", "left_hand:3,right_hand:1", "--distribution", "balanced"])  # fmt: skip
        settings = Settings(store_cases=True, data_dir=Path(folder))
        store = CaseStore.open(args.database_url or settings.case_store_url())
        try:
            models = local_models(settings.models_folder())
            truth, embeddings = score_and_keep(films, store, settings, models)
            scored = len({case_id for case_id, _, _ in truth})
            agreement = neighbour_agreement(store, truth, args.k)
            print(f"store: {store.similarity_method}; {scored} of {args.films} films scored and kept, "
                  f"{len(truth)} joints; {args.k} neighbours of every joint (other cases only)")  # fmt: skip
            for name, share in agreement.items():
                print(f"  neighbours with the query's score, {name:12s} {100 * share:5.1f} %")
            cases = [store.get(s.case_id) for s in store.list_cases(limit=10_000).items]
            stored = fill(store, embeddings, args.joints, args.seed)
            times = query_times(store, cases, args.queries, args.k, args.seed)
            print(f"{stored} joints stored: one similar() query, median {1000 * np.median(times):.1f} ms, "
                  f"p95 {1000 * np.percentile(times, 95):.1f} ms over {args.queries} queries")  # fmt: skip
        finally:
            store.close()


if __name__ == "__main__":
    main()
