"""Figures of one load run from its per-request log (`--request-log` of the locustfile).

Throughput counts answered requests (a hand scored, a non-hand refused with 422) per second of the measured
window (the run after `warmup_s`); latencies are of those answers. Failures are counted by kind (see
`loadtests.checks`). For a spike run, also:

- `spike_answered_within_2s`: of the requests sent during the spike, the share answered with 200, the expected
  422 or 503 within 2 s;
- `recovery_s`: seconds from the end of the spike until the service is normal again, normal being one-second
  windows in which every request is answered (no 503, no failure) with a median latency no higher than the p95
  of the phase before the spike or 1.5 times its median, whichever is more (that phase's first `warmup_s` left
  out), from then on to the end of the run. None when it never is.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loadtests.checks import ANSWERED, OVERLOADED
from loadtests.harness import percentile
from loadtests.shapes import spike_phases

SPIKE_DEADLINE_S = 2.0
NORMAL_MEDIAN_FACTOR = 1.5


@dataclass(frozen=True)
class Request:
    start: float  # seconds since the run started
    latency_s: float
    status: int
    kind: str
    group: str


@dataclass
class Summary:
    shape: str
    users: int | None
    window_s: float
    requests: int
    answered: int
    images_per_s: float
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    kinds: dict[str, int]
    failures: dict[str, int]
    images_per_s_by_group: dict[str, float] = field(default_factory=dict)
    all_requests: int = 0  # warm-up included
    spike_answered_within_2s: float | None = None
    spike_requests: int | None = None
    recovery_s: float | None = None

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def read_log(path: Path) -> tuple[dict, list[Request]]:
    """The run's meta data and its requests, with start times relative to the run's start."""
    path = Path(path)
    meta = json.loads(path.with_suffix(".meta.json").read_text(encoding="utf-8"))
    with open(path, newline="", encoding="utf-8") as f:
        requests = [
            Request(float(row["start"]) - meta["start"], float(row["latency_s"]), int(row["status"]), row["kind"],
                    row["group"])
            for row in csv.DictReader(f)
        ]  # fmt: skip
    return meta, sorted(requests, key=lambda r: r.start)


def summarise(meta: dict, requests: list[Request], warmup_s: float = 0.0) -> Summary:
    shape = meta.get("shape", "steady")
    duration = float(meta.get("duration_s") or (max((r.start for r in requests), default=0.0) + 1e-9))
    measured = [r for r in requests if r.start >= warmup_s]
    window = max(1e-9, duration - warmup_s)
    answered = [r for r in measured if r.kind in ANSWERED]
    latencies = [r.latency_s for r in answered]
    kinds = Counter(r.kind for r in measured)
    overload_is_answer = shape == "spike"
    failures = {
        kind: n for kind, n in sorted(kinds.items()) if kind not in ANSWERED and not (overload_is_answer and kind == OVERLOADED)
    }  # fmt: skip
    by_group = Counter(r.group for r in answered)
    summary = Summary(
        shape=shape,
        users=meta.get("users"),
        window_s=window,
        requests=len(measured),
        answered=len(answered),
        images_per_s=len(answered) / window,
        p50_s=percentile(latencies, 50),
        p95_s=percentile(latencies, 95),
        p99_s=percentile(latencies, 99),
        kinds=dict(sorted(kinds.items())),
        failures=failures,
        images_per_s_by_group={group: n / window for group, n in sorted(by_group.items())},
        all_requests=len(requests),
    )
    if shape == "spike":
        spike_figures(summary, requests, duration, warmup_s)
    return summary


def spike_figures(summary: Summary, requests: list[Request], duration: float, warmup_s: float) -> None:
    phases = spike_phases(duration)
    during = [r for r in requests if phases.spike_start <= r.start < phases.spike_end]
    in_time = [r for r in during if r.kind in (*ANSWERED, OVERLOADED) and r.latency_s <= SPIKE_DEADLINE_S]
    summary.spike_requests = len(during)
    summary.spike_answered_within_2s = len(in_time) / len(during) if during else None
    before = [r.latency_s for r in requests if warmup_s <= r.start < phases.spike_start and r.kind in ANSWERED]
    if not before:
        return
    # Either bound alone misfires: 1.5 x the median on a noisy shared machine, the p95 when latencies hardly vary.
    limit = max(NORMAL_MEDIAN_FACTOR * statistics.median(before), percentile(before, 95))
    windows: dict[int, list[Request]] = {}
    for r in requests:
        if r.start >= phases.spike_end:
            windows.setdefault(int(r.start - phases.spike_end), []).append(r)
    last = int(duration - phases.spike_end) - 1  # the last whole second; the run stops in the middle of the next
    normal = [
        bool(w) and all(r.kind in ANSWERED for r in w) and statistics.median(r.latency_s for r in w) <= limit
        for w in (windows.get(i, []) for i in range(last + 1))
    ]
    # The first second from which every later window is normal.
    recovered = None
    for i in range(len(normal) - 1, -1, -1):
        if not normal[i]:
            break
        recovered = i
    summary.recovery_s = float(recovered) if recovered is not None else None


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{1000 * seconds:.0f} ms"


def format_summary(summary: Summary) -> str:
    lines = [
        f"{summary.shape} run, {summary.users} users, {summary.window_s:.0f} s measured: {summary.requests} requests, "
        f"{summary.answered} answered ({summary.images_per_s:.2f} images/s), "
        f"p50 {_ms(summary.p50_s)}, p95 {_ms(summary.p95_s)}, p99 {_ms(summary.p99_s)}",
        "  images/s by group: " + ", ".join(f"{g} {v:.2f}" for g, v in summary.images_per_s_by_group.items()),
        "  answers by kind: " + ", ".join(f"{k} {n}" for k, n in summary.kinds.items()),
        "  failures: " + (", ".join(f"{k} {n}" for k, n in summary.failures.items()) or "none"),
    ]
    if summary.shape == "spike":
        share = summary.spike_answered_within_2s
        lines.append(
            f"  spike: {summary.spike_requests} requests, "
            f"{'n/a' if share is None else f'{100 * share:.1f} %'} answered 200/422/503 within {SPIKE_DEADLINE_S:g} s; "
            f"normal again {'never' if summary.recovery_s is None else f'{summary.recovery_s:.0f} s'} after the spike"
        )
    return "\n".join(lines)


def write_summary(summary: Summary, path: Path) -> None:
    Path(path).write_text(json.dumps(asdict(summary), indent=2) + "\n", encoding="utf-8")
