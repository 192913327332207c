"""Compute time of the three models for one image (one body-part view, one detector view, ten crops).

In one process, with TensorFlow's threads set as given, after warm-up; prints the median over repeated runs.
Timings on this machine's CPU; they do not include decoding or cropping (see the pipeline benchmark for that).

    python -m benchmarks.model_latency --models models --runs 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    from deepxray.imaging.model_inputs import BODY_PART_VIEW, CROP_SIZE, DETECTOR_VIEW
    from deepxray.models.runtime import LoadedModel, configure_threads

    configure_threads(args.threads)
    body = LoadedModel(args.models / "body_part")
    detector = LoadedModel(args.models / "joint_detection")
    scorer = LoadedModel(args.models / "ratingen_score")
    rng = np.random.default_rng(0)
    view = rng.random((1, BODY_PART_VIEW, BODY_PART_VIEW), dtype=np.float32)
    hand = rng.random((1, DETECTOR_VIEW, DETECTOR_VIEW), dtype=np.float32)
    crops = rng.random((10, CROP_SIZE, CROP_SIZE), dtype=np.float32)
    parts = {"body_part": lambda: body.predict(view), "joint_detection": lambda: detector.predict(hand),
             "ratingen_score (10 crops)": lambda: scorer.predict(crops)}  # fmt: skip
    for run in parts.values():
        run(), run()
    times = {name: [] for name in parts}
    totals = []
    for _ in range(args.runs):
        total = 0.0
        for name, run in parts.items():
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
            times[name].append(elapsed)
            total += elapsed
        totals.append(total)
    print(f"{os.cpu_count()} cores, TensorFlow threads {args.threads}, median of {args.runs} runs:")
    for name, values in times.items():
        print(f"  {name:28s} {statistics.median(values) * 1000:6.1f} ms")
    print(f"  {'all three, one image':28s} {statistics.median(totals) * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
