"""How fast the phantom generator renders and writes full-size labelled hands on this machine.

Prints (1) rendering only, in one process with one OpenCV thread: images per second per core; (2) writing N
full-size 16-bit PNGs and their manifest with one worker per core: wall time and images per second.

    python -m benchmarks.phantom_speed --render 20 --write 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from deepxray.phantoms.generate import GenerationSettings, generate_dataset
from deepxray.phantoms.phantom import render_phantom


def render_rate(n: int, seed: int = 100) -> tuple[float, float]:
    """Median seconds per full-size left hand (render only) and images/s, one core."""
    import cv2  # after deepxray, which sets OpenCV's log level (deepxray/_quiet.py)

    cv2.setNumThreads(1)
    render_phantom(seed, 0, "left_hand")  # builds the texture tile and lookup tables once
    times = []
    for index in range(1, n + 1):
        start = time.perf_counter()
        render_phantom(seed, index, "left_hand")
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return median, 1.0 / median


def write_rate(n: int, workers: int, seed: int = 200) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_dataset(Path(tmp), n, "left_hand", GenerationSettings(seed=seed), workers=workers, progress=False)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", type=int, default=20, help="hands to render in memory (one core)")
    parser.add_argument("--write", type=int, default=100, help="16-bit PNGs to write with every core")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    median, rate = render_rate(args.render)
    print(f"render only, 1 core: median {median * 1000:.0f} ms per 2048x2560 hand = {rate:.2f} images/s per core")
    if args.write:
        seconds = write_rate(args.write, args.workers)
        print(
            f"write {args.write} 16-bit PNGs + manifest with {args.workers} workers: {seconds:.1f} s "
            f"= {args.write / seconds:.2f} images/s"
        )


if __name__ == "__main__":
    main()
