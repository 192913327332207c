"""Locust load test of `POST /score`: full-size radiographs from the phantom pool, every answer checked.

    locust -f loadtests/locustfile.py --headless -u 4 -r 4 -t 60s --host http://127.0.0.1:8000 \
        --pool build/loadtest-pool --groups all --shape steady --request-log out/requests.csv

`python -m loadtests.run` generates the pool and runs this for you. Run by hand, Locust finds the pool made
already, or stops at once with one sentence saying how to make it (`python -m loadtests.pool`): making a pool
renders full-size phantoms for about a minute, which Locust's users would spend blocked (every user shares one
gevent loop), and in a distributed run every worker would make its own; so it is made once, beforehand.

Each user uploads the pool's images in turn (each user from its own place in the pool, so a short run still
sends every kind), as bytes held in memory, with no wait between requests: N users are N requests in flight, a
closed loop that saturates the service once N exceeds what it works on at once.

A wrong answer is a failure in Locust's statistics (see `loadtests.checks`): a 200 that is not ten scores in
0..5 of the right hand, a hand refused or a non-hand scored, any status but 200, 422 and (in the spike) 503, and
no answer at all. A 503 is the service's documented answer to overload: in the spike it is an answer, and the
user then waits the `Retry-After` it was given (at most 5 s) as a well-behaved client does; in steady and ramp
runs it counts as a failure.

`--token` (default: the environment variable DEEPXRAY_TOKEN) is a bearer token or API key for a service with
access control (`auth_mode` api_key or jwt): every request carries `Authorization: Bearer <token>`. It is never
written to the request log or its meta data (which record only whether a token was sent); a 401 or 403 is a
failure of its own kind (`http_401`, `http_403`).

`--request-log` writes one CSV line per request (start time, latency, status, kind, group), from which
`loadtests.summary` computes the figures Locust's own CSV does not have: failures by kind, and in the spike the
share answered within 2 s and the time until the service is back to normal.
"""

from __future__ import annotations

import csv
import itertools
import json
import sys
import time
from pathlib import Path

from locust import HttpUser, LoadTestShape, events, task

from loadtests.checks import ANSWERED, OVERLOADED, classify
from loadtests.pool import DEFAULT_POOL, MEDIA_TYPES, load_pool, missing_groups, parse_groups
from loadtests.shapes import SHAPES, users_at

MAX_RETRY_AFTER_S = 5.0
LOG_FIELDS = ("start", "latency_s", "status", "kind", "group")

_state: dict = {"pool": [], "log": None, "writer": None}
_user_numbers = itertools.count()


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--pool", default=str(DEFAULT_POOL), env_var="LOADTEST_POOL", help="phantom pool folder")
    parser.add_argument("--groups", default="all", env_var="LOADTEST_GROUPS", help="png,jpeg,dicom,others or all")
    parser.add_argument("--shape", default="steady", choices=SHAPES, env_var="LOADTEST_SHAPE")
    parser.add_argument("--spike-factor", type=float, default=3.0, env_var="LOADTEST_SPIKE_FACTOR")
    parser.add_argument("--request-log", default="", env_var="LOADTEST_REQUEST_LOG", help="per-request CSV")
    parser.add_argument("--request-timeout", type=float, default=60.0, env_var="LOADTEST_REQUEST_TIMEOUT")
    # A secret: masked in the web UI; pass it in the environment rather than on a command line others can read.
    parser.add_argument(
        "--token", default="", env_var="DEEPXRAY_TOKEN", is_secret=True, help="bearer token or API key (if needed)"
    )


@events.init.add_listener
def _check_pool(environment, **_kwargs):
    """Stops at once, with one sentence and no traceback, when the pool or its groups are missing (before any
    user starts or request is sent)."""
    options = environment.parsed_options
    if options is None:  # Locust used as a library: the caller brings its own options
        return
    try:
        groups = parse_groups(options.groups)
    except ValueError as error:
        sys.exit(f"locustfile: {error}")
    missing = missing_groups(Path(options.pool), groups)
    if missing:
        sys.exit(
            f"locustfile: no phantom pool in {options.pool} (missing: {', '.join(missing)}); make it with "
            f"`python -m loadtests.pool {options.pool}` (about a minute), or run `python -m loadtests.run`, "
            "which makes it."
        )


@events.test_start.add_listener
def _start(environment, **_kwargs):
    options = environment.parsed_options
    _state["pool"] = load_pool(Path(options.pool), parse_groups(options.groups))
    if options.request_log:
        path = Path(options.request_log)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "start": time.time(),
            "shape": options.shape,
            "users": options.num_users,
            "duration_s": options.run_time,
            "spike_factor": options.spike_factor,
            "groups": options.groups,
            "pool_images": len(_state["pool"]),
            "host": environment.host,
            "token": bool(options.token),  # whether one was sent; never the token itself
        }
        path.with_suffix(".meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _state["log"] = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed at test_stop
        _state["writer"] = csv.writer(_state["log"])
        _state["writer"].writerow(LOG_FIELDS)


@events.test_stop.add_listener
def _stop(**_kwargs):
    if _state["log"] is not None:
        _state["log"].close()
        _state["log"] = _state["writer"] = None


@events.request.add_listener
def _record(response, context, response_time, start_time, **_kwargs):
    """One line per request, whatever its outcome (Locust's CSV only aggregates)."""
    if _state["writer"] is None or "expected" not in context:
        return
    status = getattr(response, "status_code", 0) or 0
    kind, _ = classify(status, getattr(response, "content", None), context["expected"])
    _state["writer"].writerow((f"{start_time:.4f}", f"{response_time / 1000:.4f}", status, kind, context["group"]))


class RadiographUser(HttpUser):
    """Uploads the pool's radiographs one after another, as fast as the answers come."""

    def on_start(self):
        pool = _state["pool"]
        offset = next(_user_numbers) * 7  # users start at different images (7 is prime to common pool sizes)
        self.images = itertools.islice(itertools.cycle(pool), offset % len(pool), None)
        self.accept_overload = self.environment.parsed_options.shape == "spike"
        self.timeout = self.environment.parsed_options.request_timeout
        token = self.environment.parsed_options.token.strip()
        if token:
            self.client.headers["Authorization"] = f"Bearer {token}"

    @task
    def score(self):
        image = next(self.images)
        files = {"xray": (image.file, image.data, MEDIA_TYPES[image.group])}
        context = {"expected": image.expected, "group": image.group}
        with self.client.post(
            "/score",
            files=files,
            name=f"/score [{image.group}]",
            context=context,
            timeout=(10, self.timeout),
            catch_response=True,
        ) as response:
            kind, reason = classify(response.status_code or 0, response.content, image.expected)
            if kind in ANSWERED or (kind == OVERLOADED and self.accept_overload):
                response.success()
            else:
                response.failure(f"{kind}: {reason}")
        if kind == OVERLOADED:
            try:
                retry = float(response.headers.get("Retry-After", 1))
            except ValueError:
                retry = 1.0
            time.sleep(min(MAX_RETRY_AFTER_S, max(0.0, retry)))


class Scenario(LoadTestShape):
    """steady, ramp or spike (`--shape`), over `-t` seconds with `-u` users (`loadtests.shapes`)."""

    use_common_options = True

    def tick(self):
        options = self.runner.environment.parsed_options
        users = users_at(
            options.shape, self.get_run_time(), options.num_users or 1, options.run_time or 60, options.spike_factor
        )
        if users is None:
            return None
        # Ramps and the start follow -r; the spike and the fall back from it happen at once.
        rate = options.spawn_rate if options.shape != "spike" else max(users, options.spawn_rate or 1)
        return users, rate
