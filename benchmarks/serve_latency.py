"""Latency of one radiograph: the whole pipeline in one process against the served application over HTTP.

For the same full-size (2560 x 2048) 16-bit PNG phantom of a left hand, a JPEG of it, and a 16-bit PNG film of
both hands (2560 x 3584, each hand scored on its own):

- in-process: `local_models` + `deepxray.pipeline.score_radiograph` on the file's bytes (decode included), the
  TensorFlow threads set to all cores, after warm-up;
- served: `POST /score` over HTTP, one request at a time, against `--url`, or against the application this
  script starts itself (Ray with `--cpus` CPUs, the one-machine profile and `args` of serve_config.yaml) on a
  free port, or on `--port`, which it refuses when another service holds it (its figures would be that one's).

Prints p50 and p95 side by side with the served/in-process ratio of the medians. With `--soak N` it then sends N
more requests and prints the memory (RSS) of each replica of a self-started application after request 200 and
after request N, and the total of all Serve processes.

The timings are from this machine's CPU (whatever else runs on it counts too); they are not a property of the
models alone. Figures measured here are in docs/benchmarks.md ("Serving latency").

    python -m benchmarks.serve_latency --runs 30
    python -m benchmarks.serve_latency --url http://127.0.0.1:8000 --runs 30
    python -m benchmarks.serve_latency --runs 30 --soak 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from loadtests.harness import APP, PortTaken, Timing, claim_port, profile, served_application, time_calls, time_image


def phantom_files(seed: int) -> dict[str, bytes]:
    from deepxray.phantoms.phantom import render_phantom
    from deepxray.phantoms.writers import write_jpeg, write_png

    phantom = render_phantom(seed, 0, "left_hand")
    both = render_phantom(seed, 0, "both_hands")
    files = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, image, writer, suffix in (("png16", phantom.image, write_png, ".png"),
                                            ("jpeg", phantom.image, write_jpeg, ".jpg"),
                                            ("png16_both_hands", both.image, write_png, ".png")):  # fmt: skip
            path = Path(folder) / f"{name}{suffix}"
            writer(path, image)
            files[name] = path.read_bytes()
    return files


def in_process(files: dict[str, bytes], settings, runs: int, warmup: int) -> dict[str, Timing]:
    from deepxray.imaging import ImagingError
    from deepxray.models.runtime import local_models
    from deepxray.pipeline import ScoringError, score_radiograph

    models = local_models(settings.models_folder())

    def once(data: bytes) -> str:
        try:
            asyncio.run(score_radiograph(data, models, settings))
            return "200"
        except (ImagingError, ScoringError) as exc:
            return f"{exc.status} {exc.code}"

    return {name: time_calls(lambda data=data: once(data), runs, warmup) for name, data in files.items()}


def served(files: dict[str, bytes], url: str, runs: int, warmup: int) -> dict[str, Timing]:
    return {
        name: time_image(url, data, runs, warmup, filename="hand.png" if name.startswith("png") else "hand.jpg")
        for name, data in files.items()
    }


def serve_memory() -> dict[str, int]:
    """RSS in bytes of each Serve process on this machine (replicas by deployment, controller, proxy)."""
    import psutil

    memory = {}
    for process in psutil.process_iter(["cmdline", "memory_info"]):
        cmdline = process.info["cmdline"] or []
        title = cmdline[0] if cmdline else ""
        if title.startswith(f"ray::ServeReplica:{APP}:"):
            memory[title.rsplit(":", 1)[-1]] = process.info["memory_info"].rss
        elif title.startswith(("ray::ServeController", "ray::ProxyActor")):
            memory[title.removeprefix("ray::").split(".")[0]] = process.info["memory_info"].rss
    return memory


def soak(data: bytes, url: str, requests: int) -> None:
    import httpx

    snapshots, statuses = {}, {}
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(1, requests + 1):
            status = client.post("/score", files={"xray": ("hand.png", data)}).status_code
            statuses[status] = statuses.get(status, 0) + 1
            if i in (200, requests):
                snapshots[i] = serve_memory()
    print(f"\nmemory after {requests} requests (answers {statuses}), RSS in MiB:")
    first, last = snapshots.get(200, {}), snapshots.get(requests, {})
    for name in sorted(last):
        before, after = first.get(name, 0), last[name]
        growth = f"{100 * (after - before) / before:+5.1f} %" if before else "   n/a"
        print(f"  {name:22s} {before / 2**20:8.0f} {after / 2**20:8.0f}   {growth}")
    print(f"  {'all Serve processes':22s} {sum(first.values()) / 2**20:8.0f} {sum(last.values()) / 2**20:8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="model artifacts (default: DEEPXRAY_MODELS_DIR, else the shipped ones)",
    )
    parser.add_argument("--url", default=None, help="a running service; default: start one here")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the Ray started here")
    parser.add_argument("--port", type=int, default=None, help="port of the service started here (default: a free one)")
    parser.add_argument("--soak", type=int, default=0, help="then send this many requests and report memory")
    parser.add_argument(
        "--min-joint-confidence",
        type=float,
        default=None,
        help="override the config's threshold (for stand-in models that find joints only faintly)",
    )
    args = parser.parse_args()
    started_here = args.url is None
    try:
        port = claim_port(args.port) if started_here else None  # before anything is measured
    except PortTaken as error:
        sys.exit(f"serve_latency: {error}")
    overrides = {"models_dir": str(args.models.resolve())} if args.models else {}
    if args.min_joint_confidence is not None:
        overrides["min_joint_confidence"] = args.min_joint_confidence
    settings, deployments = profile(overrides=overrides)

    models_dir = settings.models_folder()

    files = phantom_files(args.seed)
    local = in_process(files, settings, args.runs, args.warmup)
    with contextlib.ExitStack() as stack:
        try:
            url = args.url or stack.enter_context(served_application(settings, deployments, args.cpus, port))
        except PortTaken as error:
            sys.exit(f"serve_latency: {error}")
        remote = served(files, url, args.runs, args.warmup)
        print(f"\n{os.cpu_count()} cores; models {models_dir}; {args.runs} runs after {args.warmup} warm-up; ms")
        print(f"{'file':28s} {'in-process p50':>15s} {'p95':>7s}   {'served p50':>11s} {'p95':>7s}   {'ratio p50':>9s}")
        for name, data in files.items():
            lt, rt = local[name], remote[name]
            label = f"{name} ({len(data) / 2**20:.1f} MiB)"
            print(
                f"{label:28s} {1000 * lt.p50:15.0f} {1000 * lt.p95:7.0f}   {1000 * rt.p50:11.0f} "
                f"{1000 * rt.p95:7.0f}   {rt.p50 / lt.p50:9.2f}"
            )
            if lt.outcome != "200" or rt.outcome != "200":
                print(f"  ! not scored: in-process answered {lt.outcome}, served {rt.outcome}; the timings stop there")
        if args.soak:
            if started_here:
                soak(files["png16"], url, args.soak)
            else:
                print("--soak measures memory only for an application started here")


if __name__ == "__main__":
    main()
