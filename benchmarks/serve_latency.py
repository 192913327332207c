"""Latency of one radiograph: the whole pipeline in one process against the served application over HTTP.

For the same full-size (2560 x 2048) 16-bit PNG phantom of a left hand, and a JPEG of it:

- in-process: `local_models` + `deepxray.pipeline.score_radiograph` on the file's bytes (decode included), the
  TensorFlow threads set to all cores, after warm-up;
- served: `POST /score` over HTTP, one request at a time, against `--url`, or against the application this
  script starts itself (Ray with `--cpus` CPUs, the one-machine profile and `args` of serve_config.yaml).

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
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = "deepxray"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def phantom_files(seed: int) -> dict[str, bytes]:
    from deepxray.phantoms.phantom import render_phantom
    from deepxray.phantoms.writers import write_jpeg, write_png

    phantom = render_phantom(seed, 0, "left_hand")
    files = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, writer, suffix in (("png16", write_png, ".png"), ("jpeg", write_jpeg, ".jpg")):
            path = Path(folder) / f"hand{suffix}"
            writer(path, phantom.image)
            files[name] = path.read_bytes()
    return files


def config_args(overrides: dict):
    """The `args` of serve_config.yaml with `overrides`, as AppArgs, and the config's deployment profile."""
    import yaml

    from deepxray.app import AppArgs

    application = yaml.safe_load((ROOT / "serve_config.yaml").read_text(encoding="utf-8"))["applications"][0]
    args = AppArgs.model_validate({**application["args"], **overrides})
    return args, {deployment["name"]: deployment for deployment in application["deployments"]}


def in_process(files: dict[str, bytes], args, runs: int, warmup: int) -> dict[str, tuple[list, str]]:
    from deepxray.imaging import ImagingError
    from deepxray.models.runtime import local_models
    from deepxray.pipeline import ScoringError, score_radiograph

    models = local_models(Path(args.models_dir))
    limits = args.ingress_settings().limits()

    async def once(data: bytes) -> str:
        try:
            await score_radiograph(data, models, limits)
            return "200"
        except (ImagingError, ScoringError) as exc:
            return f"{exc.status} {exc.code}"

    results = {}
    for name, data in files.items():
        for _ in range(warmup):
            asyncio.run(once(data))
        times, outcome = [], ""
        for _ in range(runs):
            start = time.perf_counter()
            outcome = asyncio.run(once(data))
            times.append(time.perf_counter() - start)
        results[name] = (times, outcome)
    return results


def start_application(args, profile: dict, cpus: int, port: int) -> str:
    import httpx
    import ray
    from ray import serve

    from deepxray.app import bind_graph

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(bind_graph(args, profile), name=APP, route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
                return url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the application did not become ready within 300 s")


def served(files: dict[str, bytes], url: str, runs: int, warmup: int) -> dict[str, tuple[list, str]]:
    import httpx

    results = {}
    with httpx.Client(base_url=url, timeout=120) as client:
        for name, data in files.items():
            suffix = ".png" if name.startswith("png") else ".jpg"
            for _ in range(warmup):
                client.post("/score", files={"xray": (f"hand{suffix}", data)})
            times, outcome = [], ""
            for _ in range(runs):
                start = time.perf_counter()
                response = client.post("/score", files={"xray": (f"hand{suffix}", data)})
                times.append(time.perf_counter() - start)
                outcome = str(response.status_code)
                if response.status_code != 200:
                    outcome += f" {response.json().get('error', '')}"
            results[name] = (times, outcome)
    return results


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
    from deepxray.models.artifacts import default_models_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None, help="model artifacts (default: the shipped models)")
    parser.add_argument("--url", default=None, help="a running service; default: start one here")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the Ray started here")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--soak", type=int, default=0, help="then send this many requests and report memory")
    parser.add_argument(
        "--min-joint-confidence",
        type=float,
        default=None,
        help="override the config's threshold (for stand-in models that find joints only faintly)",
    )
    args = parser.parse_args()
    models_dir = (args.models or default_models_dir()).resolve()
    overrides = {"models_dir": str(models_dir)}
    if args.min_joint_confidence is not None:
        overrides["min_joint_confidence"] = args.min_joint_confidence
    app_args, profile = config_args(overrides)

    files = phantom_files(args.seed)
    local = in_process(files, app_args, args.runs, args.warmup)
    started_here = args.url is None
    url = args.url or start_application(app_args, profile, args.cpus, args.port)
    try:
        remote = served(files, url, args.runs, args.warmup)
        print(f"\n{os.cpu_count()} cores; models {models_dir}; {args.runs} runs after {args.warmup} warm-up; ms")
        print(f"{'file':22s} {'in-process p50':>15s} {'p95':>7s}   {'served p50':>11s} {'p95':>7s}   {'ratio p50':>9s}")
        for name, data in files.items():
            (lt, lo), (rt, ro) = local[name], remote[name]
            lp50, rp50 = statistics.median(lt), statistics.median(rt)
            label = f"{name} ({len(data) / 2**20:.1f} MiB)"
            print(
                f"{label:22s} {1000 * lp50:15.0f} {1000 * percentile(lt, 95):7.0f}   {1000 * rp50:11.0f} "
                f"{1000 * percentile(rt, 95):7.0f}   {rp50 / lp50:9.2f}"
            )
            if lo != "200" or ro != "200":
                print(f"  ! not scored: in-process answered {lo}, served {ro}; the timings stop at the refusal")
        if args.soak:
            if started_here:
                soak(files["png16"], url, args.soak)
            else:
                print("--soak measures memory only for an application started here")
    finally:
        if started_here:
            import ray
            from ray import serve

            serve.shutdown()
            ray.shutdown()


if __name__ == "__main__":
    main()
