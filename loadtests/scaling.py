"""The scaling benchmark: replica layouts of the three model deployments against the monolith baseline.

    python -m loadtests.scaling                                   # the default layouts, monolith, 60 s runs
    python -m loadtests.scaling --layouts 1-1-1-1,2-1-1-1,2-1-2-1,2-1-2-2 --users 4 --duration 60s --spike

For each layout (replicas I-B-J-R of Ingress, BodyPart, JointDetection, RatingenScore; CPU shares those of
serve_config.yaml, shrunk alike where they would not fit on `--cpus`) it deploys the application on a Ray started
here, then measures:

- time per image the way the original did: the same full-size 16-bit PNG ten times in a row, one at a time
  (mean, after two warm-up requests);
- throughput and p95 at saturation: Locust, steady, `--users` users with no wait (a closed loop), once on the 16-bit
  PNG hands of the pool and once on the JPEG hands, the first `--warmup` seconds left out;
- CPU seconds per image of every process (each replica, Ray's proxy and the rest of Ray, Locust itself) during the
  PNG run: where the time goes;
- with `--spike`, the spike scenario on 16-bit PNGs (`--users` for a third of the time, three times as many for
  a third, `--users` again), for the layout first listed.

`--arg NAME=VALUE` replaces one of the config's `args:` for every layout and the monolith alike, e.g. the
ingress's admission limits (`max_scoring`, `max_waiting`): what decides whether a spike is answered by a fast
503 or by a queue that makes every answer late.

Then the monolith (`loadtests.monolith`, as many uvicorn workers as `--cpus`, one thread each) under the same
runs, unless `--no-monolith`. Prints a Markdown table and our throughput and p95 as ratios to the monolith's;
saves `scaling.png` (throughput and p95 by layout), `scaling.json`, every run's Locust output and the monolith's
log in `--out`.

The figures are this machine's: Locust, Ray and the service share its cores, so a run on a busy machine says
little. Takes about 3 minutes per layout with the defaults, 1.5 more for `--spike`, 2.5 for the monolith.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loadtests.harness import time_image
from loadtests.pool import DEFAULT_POOL, ensure_pool, load_pool
from loadtests.run import LoadRun, parse_duration, run_load
from loadtests.service import Layout, children_cpu, cpu_by_role, monolith, ray_application
from loadtests.summary import Summary, format_summary

DEFAULT_LAYOUTS = "1-1-1-1,2-1-1-1,2-1-2-1,2-1-2-2"
MONOLITH = "monolith"


@dataclass
class Result:
    name: str
    time_per_image_s: float
    time_per_image_median_s: float
    png: Summary
    jpeg: Summary
    cpu_per_image_s: dict[str, float] = field(default_factory=dict)
    spike: Summary | None = None


def time_per_image(url: str, data: bytes, repeats: int = 10, warmup: int = 2) -> list[float]:
    """Seconds for each of `repeats` uploads of the same image, one after another (the original's measure)."""
    timing = time_image(url, data, repeats, warmup)
    if timing.outcome != "200":
        raise RuntimeError(f"the timing image was answered {timing.outcome}")
    return timing.times


def measure(name: str, url: str, options: argparse.Namespace, out: Path, spike: bool) -> Result:
    png = next(image for image in load_pool(options.pool, ["png"]) if image.expected.body_part == "left_hand")
    times = time_per_image(url, png.data)
    print(f"[{name}] time per image (same PNG x10): mean {statistics.mean(times):.3f} s")

    def steady(groups: str) -> LoadRun:
        return LoadRun(url, options.users, options.duration_s, "steady", 0.0, groups, warmup_s=options.warmup)

    cpu_before, locust_before = cpu_by_role(), children_cpu()
    png_run = run_load(steady("png"), out / name / "png", options.pool, quiet=True)
    cpu_after, locust_after = cpu_by_role(), children_cpu()
    print(format_summary(png_run))
    # CPU of the whole run (warm-up included) per request of the whole run.
    images = max(1, png_run.all_requests)
    cpu = {role: (cpu_after[role] - cpu_before.get(role, 0.0)) / images for role in cpu_after}
    cpu["locust"] = (locust_after - locust_before) / images
    print(f"[{name}] CPU s per image: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(cpu.items())))

    jpeg_run = run_load(steady("jpeg"), out / name / "jpeg", options.pool, quiet=True)
    print(format_summary(jpeg_run))
    spike_run = None
    if spike:
        run = LoadRun(url, options.users, options.spike_duration_s, "spike", 0.0, "png", 3.0, options.warmup)
        spike_run = run_load(run, out / name / "spike", options.pool, quiet=True)
        print(format_summary(spike_run))
    return Result(name, statistics.mean(times), statistics.median(times), png_run, jpeg_run, cpu, spike_run)


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown_table(results: list[Result], cpus: int) -> str:
    base = next((r for r in results if r.name == MONOLITH), None)
    lines = [
        "| layout (I-B-J-R) | time per image, s | PNG images/s | PNG p95, s | JPEG images/s | JPEG p95, s | failures "
        "| PNG throughput / monolith | PNG p95 / monolith |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        failures = r.png.failed + r.jpeg.failed
        ratio = p95_ratio = "—"
        if base is not None and r is not base:
            ratio = f"{r.png.images_per_s / base.png.images_per_s:.2f}" if base.png.images_per_s else "n/a"
            p95_ratio = f"{r.png.p95_s / base.png.p95_s:.2f}" if r.png.p95_s and base.png.p95_s else "n/a"
        label = f"monolith ({cpus} uvicorn workers)" if r.name == MONOLITH else r.name
        lines.append(
            f"| {label} | {r.time_per_image_s:.3f} | {r.png.images_per_s:.2f} | {_s(r.png.p95_s)} "
            f"| {r.jpeg.images_per_s:.2f} | {_s(r.jpeg.p95_s)} | {failures} | {ratio} | {p95_ratio} |"
        )
    return "\n".join(lines)


def cpu_table(results: list[Result]) -> str:
    """CPU milliseconds per image of each process role during the PNG run: what costs the time."""
    roles = sorted({role for r in results for role in r.cpu_per_image_s})
    lines = ["| layout | " + " | ".join(roles) + " | all |", "| --- |" + " --- |" * (len(roles) + 1)]
    for r in results:
        cells = [f"{1000 * r.cpu_per_image_s[role]:.0f}" if role in r.cpu_per_image_s else "" for role in roles]
        lines.append(f"| {r.name} | " + " | ".join(cells) + f" | {1000 * sum(r.cpu_per_image_s.values()):.0f} |")
    return "\n".join(lines)


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in results]
    x = range(len(results))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.38
    left.bar([i - width / 2 for i in x], [r.png.images_per_s for r in results], width, label="16-bit PNG")
    left.bar([i + width / 2 for i in x], [r.jpeg.images_per_s for r in results], width, label="JPEG")
    left.set(title="Throughput at saturation", ylabel="images/s", xlabel="layout (I-B-J-R)")
    right.plot(names, [r.png.p95_s or 0 for r in results], "o-", label="16-bit PNG")
    right.plot(names, [r.jpeg.p95_s or 0 for r in results], "s-", label="JPEG")
    right.axhline(1.0, color="grey", linestyle=":", label="1 s")
    right.set_ylim(bottom=0)
    right.set(title="p95 latency at saturation", ylabel="s", xlabel="layout (I-B-J-R)")
    for axis in (left, right):
        axis.set_xticks(list(x), names, rotation=20)
        axis.legend()
    fig.suptitle(f"DeepXRay on {os.cpu_count()} cores, Locust closed loop")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_app_args(items: list[str]) -> dict[str, str]:
    """`NAME=VALUE` items to a dict (AppArgs validates names and values when the application is built)."""
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--arg takes NAME=VALUE, got {item!r}")
        pairs[name.strip()] = value.strip()
    return pairs


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", default=DEFAULT_LAYOUTS, help="comma list of I-B-J-R (default: %(default)s)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of Ray, workers of the monolith")
    parser.add_argument("--users", type=int, default=4, help="Locust users at saturation (default: %(default)s)")
    parser.add_argument("--duration", default="60s", help="each saturation run (default: %(default)s)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds left out of each run's figures")
    parser.add_argument("--spike", action="store_true", help="also the spike scenario on the first layout")
    parser.add_argument("--spike-duration", default="90s", help="the whole spike run, in thirds (default: 90s)")
    parser.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="replaces an `args:` value of serve_config.yaml for every layout and the monolith, e.g. max_waiting=4",
    )
    parser.add_argument("--no-monolith", dest="monolith", action="store_false", help="leave out the baseline")
    parser.add_argument("--pool", type=Path, default=DEFAULT_POOL)
    parser.add_argument("--out", type=Path, default=Path("build/scaling"))
    options = parser.parse_args(argv)
    options.duration_s = parse_duration(options.duration)
    options.spike_duration_s = parse_duration(options.spike_duration)
    options.app_args = parse_app_args(options.arg)
    options.layout_list = [Layout.parse(text) for text in options.layouts.split(",") if text.strip()]
    return options


def main(argv: list[str] | None = None) -> None:
    options = parse_options(argv)
    layouts = options.layout_list
    ensure_pool(options.pool)

    results = []
    for i, layout in enumerate(layouts):
        with ray_application(layout, options.cpus, args_overrides=options.app_args) as url:
            results.append(measure(layout.name, url, options, options.out, spike=options.spike and i == 0))
    if options.monolith:
        with monolith(options.cpus, options.cpus, app_args=options.app_args, log_dir=options.out / MONOLITH) as url:
            results.append(measure(MONOLITH, url, options, options.out, spike=False))

    table = markdown_table(results, options.cpus)
    print(f"\n{os.cpu_count()} cores; Locust {options.users} users, {options.duration_s} s per run "
          f"({options.warmup:g} s warm-up left out)\n")  # fmt: skip
    print(table)
    cpu = cpu_table(results)
    print("\nCPU ms per image during the PNG run, by process (Locust included: it shares the cores)\n")
    print(cpu)
    spikes = [f"Spike on {r.name}: {format_summary(r.spike)}" for r in results if r.spike is not None]
    for text in spikes:
        print(f"\n{text}")
    options.out.mkdir(parents=True, exist_ok=True)
    plot(results, options.out / "scaling.png")
    (options.out / "scaling.md").write_text("\n\n".join([table, cpu, *spikes]) + "\n", encoding="utf-8")
    (options.out / "scaling.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    print(f"\nplot, table, figures and every run's Locust output in {options.out}")


if __name__ == "__main__":
    main()
