"""Headless load run against a running service: the pool made if missing, Locust, its CSV and HTML, a summary.

    python -m loadtests.run --url http://127.0.0.1:8000 --shape steady --users 4 --duration 60s
    python -m loadtests.run --url http://127.0.0.1:8000 --shape ramp --users 12 --duration 120s
    python -m loadtests.run --url http://127.0.0.1:8000 --shape spike --users 4 --spike-factor 3 --duration 90s
    DEEPXRAY_TOKEN=... python -m loadtests.run --url https://deepxray.example.org   # a service with access control

A service with access control (`auth_mode` api_key or jwt) needs a token or API key with the scope `score`:
`--token`, or the environment variable DEEPXRAY_TOKEN. Locust gets it in its environment, never on its command
line, and it is written nowhere.

Writes into `--out`: `locust_stats.csv`, `locust_stats_history.csv`, `locust_failures.csv`,
`locust_exceptions.csv` and `locust.html` (Locust's own), `requests.csv` and `requests.meta.json` (every request),
`summary.json`; prints the summary (`loadtests.summary`). Exits with 1 when any request failed, so it can gate CI.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.pool import DEFAULT_POOL, ensure_pool, parse_groups
from loadtests.shapes import SHAPES
from loadtests.summary import Summary, format_summary, read_log, summarise, write_summary

ROOT = Path(__file__).resolve().parents[1]
TOKEN_VARIABLE = "DEEPXRAY_TOKEN"
LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
_DURATION = re.compile(r"(?P<plain>\d+)|(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?")


@dataclass(frozen=True)
class LoadRun:
    """One Locust run: where, how hard, how long, with which images."""

    url: str
    users: int = 4
    duration_s: int = 60
    shape: str = "steady"
    spawn_rate: float = 0.0  # users started per second; 0: all at once
    groups: str = "all"
    spike_factor: float = 3.0
    warmup_s: float = 0.0  # left out of the figures (JIT, connection set-up, the ramp of users)
    request_timeout_s: float = 60.0
    # Bearer token or API key sent with every request; None: DEEPXRAY_TOKEN of this environment, if any. Kept out
    # of the repr, so that it is never printed with the run.
    token: str | None = field(default=None, repr=False)


def parse_duration(text: str) -> int:
    """`90`, `90s`, `2m` or `1m30s` to whole seconds. (Not Locust's parser: importing locust monkey-patches the
    whole process with gevent, which the benchmark's own Ray driver must not be.)"""
    match = _DURATION.fullmatch(text.strip())
    if not match or not any(match.groups()):
        raise ValueError(f"a duration is like 90, 90s, 2m or 1h30m; got {text!r}")
    if match["plain"]:
        seconds = int(match["plain"])
    else:
        seconds = sum(int(match[unit] or 0) * factor for unit, factor in (("h", 3600), ("m", 60), ("s", 1)))
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return seconds


def locust_command(run: LoadRun, pool: Path, out: Path) -> list[str]:
    rate = run.spawn_rate or run.users
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "-u", str(run.users), "-r", f"{rate:g}", "-t", f"{run.duration_s}s", "--host", run.url,
        "--csv", str(out / "locust"), "--csv-full-history", "--html", str(out / "locust.html"),
        "--pool", str(pool), "--groups", run.groups, "--shape", run.shape, "--spike-factor", f"{run.spike_factor:g}",
        "--request-log", str(out / "requests.csv"), "--request-timeout", f"{run.request_timeout_s:g}",
        # Users leave only after their request is answered (at the spike's end too), so every request sent is
        # recorded with its outcome rather than cut off unseen.
        "--stop-timeout", f"{int(run.request_timeout_s)}s",
        "--exit-code-on-error", "0", "--loglevel", "WARNING",
    ]  # fmt: skip


def run_load(run: LoadRun, out: Path, pool: Path = DEFAULT_POOL, quiet: bool = False) -> Summary:
    """Runs Locust headless as a subprocess and returns the run's summary (also written to `out`)."""
    parse_groups(run.groups)  # fail before generating anything
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ensure_pool(pool, progress=not quiet)
    # The locustfile imports this package: make it importable from a plain checkout too.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if run.token:
        env[TOKEN_VARIABLE] = run.token  # the locustfile's --token: in the environment, not on a command line
    # Locust's end-of-run tables go to the log file; the summary below is what matters.
    with open(out / "locust.log", "w", encoding="utf-8") as log:
        result = subprocess.run(
            locust_command(run, Path(pool), out), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            timeout=run.duration_s + 120,
        )  # fmt: skip
    if result.returncode != 0 or not (out / "requests.csv").is_file():
        tail = (out / "locust.log").read_text(encoding="utf-8")[-3000:]
        raise RuntimeError(f"locust exited with {result.returncode}:\n{tail}")
    meta, requests = read_log(out / "requests.csv")
    summary = summarise(meta, requests, run.warmup_s)
    write_summary(summary, out / "summary.json")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service (default: %(default)s)")
    parser.add_argument("--shape", choices=SHAPES, default="steady")
    parser.add_argument("--users", type=int, default=4, help="users (requests in flight); the spike's base")
    parser.add_argument("--spawn-rate", type=float, default=0.0, help="users started per second (0: all at once)")
    parser.add_argument("--duration", default="60s", help="run time, e.g. 90s or 2m (default: %(default)s)")
    parser.add_argument("--groups", default="all", help="pool groups: png,jpeg,dicom,others or all")
    parser.add_argument("--spike-factor", type=float, default=3.0, help="spike users as a multiple of --users")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds left out of the figures")
    parser.add_argument("--pool", type=Path, default=DEFAULT_POOL, help="phantom pool (generated when missing)")
    parser.add_argument("--out", type=Path, default=Path("build/loadtest"), help="output folder")
    parser.add_argument(
        "--token", default=None, help=f"bearer token or API key for the service (default: {TOKEN_VARIABLE})"
    )
    args = parser.parse_args(argv)
    run = LoadRun(
        url=args.url.rstrip("/"),
        users=args.users,
        duration_s=parse_duration(args.duration),
        shape=args.shape,
        spawn_rate=args.spawn_rate,
        groups=args.groups,
        spike_factor=args.spike_factor,
        warmup_s=args.warmup,
        token=args.token,
    )
    summary = run_load(run, args.out, args.pool)
    print(format_summary(summary))
    print(f"Locust CSV and HTML, the request log and summary.json in {args.out}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
