"""Reliability under faults and change: load on the service while a replica is killed, hangs, the models are
rolled to another version and back, or for a long soak; one JSON summary on stdout with pass/fail lines.

    python -m loadtests.faults replica-kill
    python -m loadtests.faults replica-hang
    python -m loadtests.faults rolling-update
    python -m loadtests.faults soak --duration 600
    python -m loadtests.faults replica-kill --short                  # the short form CI runs (tests/test_faults.py)
    python -m loadtests.faults replica-kill --replicas 1-2-2-2 --health-check 2:4
    python -m loadtests.faults soak --url http://127.0.0.1:8000 --rate 2   # a running service: no pids, no memory

The service is started here as `serve_config.yaml` runs it (its `deployments:` and `args:`, on a Ray of 2 CPUs
started for the run, on a free port: `loadtests.harness.served_application`), and stopped after. `--replicas
I-B-J-R` changes the replica counts (CPU shares shrink alike so the replicas fit the CPUs, as in
`loadtests.scaling`), `--health-check PERIOD:TIMEOUT` and `--graceful-shutdown S` set those options of every
deployment, `--arg NAME=VALUE` an application setting (e.g. `stage_timeout_s=5`): what an operator would write in
the profile. `--url` uses a running service instead; the faults that need the replicas' processes or handles
(replica-kill, replica-hang, rolling-update) are then refused, and soak runs without memory figures.

The load: `--clients` threads (default 4, the ingress's `max_scoring`), each uploading the phantom pool's
full-size films one after another (the pool `loadtests.pool` makes for Locust, generated when missing), a closed
loop; soak sends at a fixed rate instead (`--rate`, or 80 % of the saturation measured first with the closed
loop). Every upload is checked as Locust checks it (`loadtests.checks`). A 503 with `Retry-After` (overload, a
replica restarting, `models_updating`) is retried after that many seconds and counted apart (`retried_503`); it
is no failure unless the service keeps answering it for `MAX_RETRY_WAIT_S`. Each HTTP request waits at most
`stage_timeout_s` + 5 s; one not answered by then is a failure of kind `timeout` (a request that hangs).

Scenarios:

- replica-kill: SIGKILL to the process of one replica of BodyPart, JointDetection, RatingenScore and Ingress in
  turn (found by process title among this process's descendants: `ray::ServeReplica:deepxray:<name>`), each
  after `--duration` seconds of load (default 15; `--short`: RatingenScore and Ingress only, 3 s), then waiting
  until the service is healthy again before the next.
- replica-hang: one replica of `--target` (default RatingenScore) made to hang through its debugging hook
  (`ModelServer.debug_hang`, allowed by DEEPXRAY_DEBUG_HOOKS=1, which this scenario sets in the model deployments'
  runtime_env): its predictions and health checks wait `HANG_S`; the stage timeout answers the requests caught
  in it (504) and the health check must have Serve replace it.
- rolling-update: the application deployed again (`serve.run` with the changed settings, as `serve deploy` of an
  edited profile would) with `models_dir` pointing at a second model set that differs in the Ratingen scorer
  only, while the load runs, and then back (`--short`: there only). The second set (`--rollout-models`, default
  made once in ~/.cache/deepxray/faults, a few minutes): the scorer's weights after epoch 1 of a short training
  run (`deepxray train all --synthetic 300 --epochs 1`, then `deepxray checkpoint --epoch 1`: version
  `...-epoch01`), beside the service's own body-part model and detector (symbolic links).
- soak: `--duration` seconds (default 600) at `--rate` requests a second (default 80 % of the saturation
  measured for `SATURATION_S` first), recording every replica's memory (RSS, psutil) each minute.

The summary: requests sent (HTTP requests, retries included) and uploads (films), answers by status, retried
503s, failures by kind (timeout, connection_error, 5xx, unexpected) with their details, the longest latency and
the percentiles of the answers' latencies; per fault: when the first 200 to a request sent after it came
(`first_200_s`), when `/readyz` answered 200 after it (`readyz_s`), for a service started here when every
deployment was back to its replicas, all HEALTHY (`replicas_back_s`), its failures (those that ended between it
and the next fault: the requests in flight at it fail after it) and `healthy_again_s`, until the service answers
normally again: the later of `/readyz` answering 200 and the first 200 to a request sent after its last
failure. Then answers per model-version tuple (the `models` of each 200) and answers whose tags mix versions (a
tag naming more than one version, or in rolling-update a combination of tags that is neither the set before nor
the set after); for soak the saturation, the rate, and each replica's RSS per minute (the median of
`MEMORY_SAMPLES` samples) with its growth. `checks` holds one line per condition, PASS or FAIL (INFO: a figure
that is no condition; SKIP: a condition not measured):

- every scenario: no request hangs (each answered or refused within stage_timeout_s + 5 s);
- replica-kill, replica-hang: each model replica killed or hung costs at most 1 % of the uploads (the failures
  of its window), and the service is healthy again within 30 s of each fault, the Ingress's too (what its kill
  costs, the requests in flight in it, is an INFO line: it is no model replica);
- rolling-update: 0 lost (every upload answered, a retried 503 allowed) and 0 mixed-version answers;
- soak: 0 failures, and each replica's memory grew at most 5 % from minute 2 to the end.

Exit status 0 when no check fails, 1 when one does, 2 when the run is refused (one sentence on stderr).
Progress lines, and whatever Ray prints, go to stderr. Figures from this machine: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.checks import classify
from loadtests.harness import APP, READY_TIMEOUT_S, percentile, profile, served_application
from loadtests.pool import DEFAULT_POOL, MEDIA_TYPES, PoolImage, ensure_pool, load_pool, parse_groups
from loadtests.service import DEPLOYMENTS, Layout

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("replica-kill", "replica-hang", "rolling-update", "soak")
MODEL_DEPLOYMENTS = ("BodyPart", "JointDetection", "RatingenScore")
NEEDS_PROCESSES = ("replica-kill", "replica-hang", "rolling-update")
DEBUG_HOOKS_VARIABLE = "DEEPXRAY_DEBUG_HOOKS"  # as deepxray.deployments.common names it
TOKEN_VARIABLE = "DEEPXRAY_TOKEN"

HANG_EXTRA_S = 5.0  # a request may take stage_timeout_s + this before it counts as hanging
MAX_RETRY_WAIT_S = 60.0  # a film still refused with 503 after this much waiting is lost
HEALTHY_WITHIN_S = 30.0
MAX_FAILED_SHARE = 0.01
MAX_MEMORY_GROWTH_PCT = 5.0
RECOVERY_TIMEOUT_S = 180.0  # longest wait for the service to be healthy again after a fault
HANG_S = 3600.0  # a hung replica stays hung: only Serve's health check can end it
SATURATION_S = 30.0
SATURATION_FRACTION = 0.8
MEMORY_SAMPLES = 6  # RSS samples a period (a minute): the period's figure is their median
CACHE = Path.home() / ".cache" / "deepxray" / "faults"
ROLLOUT_MODEL = "ratingen_score"  # the one model the rolling update changes
CPUS = 2

# Seconds of load before each fault and after the last (replica-kill, replica-hang, rolling-update).
DEFAULT_SETTLE_S = 15.0
SHORT_SETTLE_S = 3.0
SHORT_SOAK_S = 60.0


def note(message: str) -> None:
    """A progress line on stderr (stdout carries the summary only)."""
    print(f"faults: {message}", file=sys.stderr, flush=True)


class Refused(Exception):
    """The run cannot be done as asked (its message is one sentence)."""


# -------------------------------------------------------------------------------------------------- the load


@dataclass(frozen=True)
class Attempt:
    """One HTTP request and what came of it.

    `outcome`: ok (a hand scored), refused (a non-hand answered 422, as it should be), retried_503 (a 503 with
    Retry-After, retried), timeout, connection_error, 5xx, unexpected (a wrong answer or another status)."""

    start: float  # seconds since the load started
    latency_s: float
    status: int  # 0: no HTTP answer
    outcome: str
    detail: str
    models: tuple[tuple[str, str], ...] | None = None  # the `models` of a 200, as sorted (name, tag) pairs
    mixed: bool = False  # a tag naming more than one version

    @property
    def end(self) -> float:
        return self.start + self.latency_s


ANSWERED = ("ok", "refused")
FAILURE_KINDS = ("timeout", "connection_error", "5xx", "unexpected")


def retry_after_of(headers) -> float | None:
    """Seconds of a `Retry-After` header, or None when there is none (or it is not a number of seconds)."""
    value = (headers or {}).get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def error_code(content: bytes | None) -> str:
    try:
        body = json.loads(content or b"")
    except ValueError:
        return (content or b"")[:40].decode("utf-8", "replace").strip()
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def models_of(content: bytes | None) -> tuple[tuple[tuple[str, str], ...] | None, bool]:
    """The `models` of a 200 answer as sorted (name, tag) pairs, and whether a tag names several versions (a
    list of tags, or several `name@version` joined in one string)."""
    try:
        models = json.loads(content or b"").get("models")
    except (ValueError, AttributeError):
        return None, False
    if not isinstance(models, dict):
        return None, False
    pairs, mixed = [], False
    for name, tag in sorted(models.items()):
        tags = {str(t) for t in tag} if isinstance(tag, list) else set(re.split(r"[,;+|\s]+", str(tag).strip()))
        tags.discard("")
        mixed |= len(tags) != 1
        pairs.append((name, " + ".join(sorted(tags))))
    return tuple(pairs), mixed


def judge(status: int, content: bytes | None, image: PoolImage) -> tuple[str, str]:
    """(outcome, detail) of an HTTP answer other than a 503 with Retry-After."""
    kind, reason = classify(status, content, image.expected)
    if kind in ANSWERED:
        return kind, reason
    if status >= 500:
        return "5xx", f"{status} {error_code(content)}".strip()
    return "unexpected", f"{kind}: {reason}"


class Load:
    """Uploads of the pool's films from `clients` threads: a closed loop (each thread sends its next film when
    the last is answered) or, with `rate`, films sent at that many a second, at most `clients` at once."""

    def __init__(self, url: str, images: list[PoolImage], clients: int, timeout_s: float, rate: float | None = None):
        self.url, self.images, self.clients, self.timeout_s, self.rate = url, images, clients, timeout_s, rate
        self.attempts: list[Attempt] = []
        self.uploads = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._local = threading.local()
        self.t0 = time.monotonic()
        token = os.environ.get(TOKEN_VARIABLE, "").strip()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> Load:
        self.t0 = time.monotonic()
        if self.rate:
            self._threads = [threading.Thread(target=self._paced, name="faults-pacer", daemon=True)]
        else:
            self._threads = [
                threading.Thread(target=self._closed, args=(i,), name=f"faults-client-{i}", daemon=True)
                for i in range(self.clients)
            ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stops sending; waits for the films in flight (their retries included)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=MAX_RETRY_WAIT_S + 2 * self.timeout_s)

    def _client(self):
        import httpx

        if not hasattr(self._local, "client"):
            self._local.client = httpx.Client(base_url=self.url, timeout=self.timeout_s, headers=self.headers)
        return self._local.client

    def _closed(self, number: int) -> None:
        films = itertools.islice(itertools.cycle(self.images), (number * 7) % len(self.images), None)
        with contextlib.closing(self._client()):
            while not self._stop.is_set():
                self.upload(next(films))

    def _paced(self) -> None:
        pool = ThreadPoolExecutor(self.clients, thread_name_prefix="faults-client")
        for k in itertools.count():
            due = k / self.rate
            while not self._stop.is_set() and self.now() < due:
                time.sleep(min(0.05, due - self.now()))
            if self._stop.is_set():
                break
            pool.submit(self.upload, self.images[k % len(self.images)])
        # Films in flight finish; films not yet sent (the service fell behind the rate) are never sent.
        pool.shutdown(wait=True, cancel_futures=True)

    def upload(self, image: PoolImage) -> None:
        """One film, until it is answered: a 503 with Retry-After is sent again after that many seconds."""
        import httpx

        with self._lock:
            self.uploads += 1
        waited = 0.0
        while True:
            start = self.now()
            begun = time.perf_counter()
            status, content, headers, failure = 0, None, None, None
            try:
                response = self._client().post(
                    "/score", files={"xray": (image.file, image.data, MEDIA_TYPES[image.group])}
                )
                status, content, headers = response.status_code, response.content, response.headers
            except httpx.TimeoutException:
                failure = ("timeout", f"no answer within {self.timeout_s:g} s")
            except httpx.HTTPError as error:
                failure = ("connection_error", type(error).__name__)
            latency = time.perf_counter() - begun
            retry = retry_after_of(headers) if status == 503 else None
            if retry is not None and waited + retry <= MAX_RETRY_WAIT_S:
                self._record(Attempt(start, latency, status, "retried_503", f"503 {error_code(content)}".strip()))
                time.sleep(retry)
                waited += retry
                continue
            if failure is None:
                failure = judge(status, content, image)
                if status == 503 and retry is not None:
                    failure = ("5xx", f"503 {error_code(content)} for {waited:g} s of retries".strip())
            models, mixed = models_of(content) if status == 200 else (None, False)
            self._record(Attempt(start, latency, status, failure[0], failure[1], models, mixed))
            return

    def _record(self, attempt: Attempt) -> None:
        with self._lock:
            self.attempts.append(attempt)

    def snapshot(self) -> list[Attempt]:
        with self._lock:
            return list(self.attempts)

    def first_200_after(self, t: float) -> float | None:
        """When the first 200 to a request sent at or after `t` came (seconds since the load started)."""
        ends = [a.end for a in self.snapshot() if a.status == 200 and a.start >= t]
        return min(ends) if ends else None


class Readiness:
    """`GET /readyz` every `period_s` in a thread: when it answered 200 and when not."""

    def __init__(self, url: str, clock: Callable[[], float], period_s: float = 0.5):
        self.url, self.clock, self.period_s = url, clock, period_s
        self.observations: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="faults-readyz", daemon=True)

    def __enter__(self) -> Readiness:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _poll(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            while not self._stop.is_set():
                asked = self.clock()
                try:
                    ready = client.get("/readyz").status_code == 200
                except httpx.HTTPError:
                    ready = False
                self.observations.append((asked, ready))
                self._stop.wait(self.period_s)

    def ready_after(self, t: float) -> float | None:
        """When `/readyz` first answered 200 to a question asked at or after `t`."""
        return next((asked for asked, ready in list(self.observations) if asked >= t and ready), None)

    def not_ready_s(self) -> float:
        """Seconds (about) during which `/readyz` did not answer 200."""
        return sum(self.period_s for _, ready in list(self.observations) if not ready)


# ---------------------------------------------------------------------------------------- the service here


def replica_processes() -> dict[str, list[int]]:
    """The pids of this application's Serve replicas among this process's descendants, by deployment (from the
    process title Ray gives a replica: `ray::ServeReplica:<app>:<deployment>`)."""
    import psutil

    prefix = f"ray::ServeReplica:{APP}:"
    found: dict[str, list[int]] = {}
    for process in psutil.Process().children(recursive=True):
        try:
            title = (process.cmdline() or [""])[0]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if title.startswith(prefix):
            name = re.split(r"[.\s]", title[len(prefix) :], maxsplit=1)[0]
            found.setdefault(name, []).append(process.pid)
    return {name: sorted(pids) for name, pids in found.items()}


def rss_mb(pid: int) -> float | None:
    import psutil

    try:
        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


@dataclass
class Service:
    """The application under test: its URL, and when started here, its settings and deployments' options."""

    url: str
    settings: Any = None
    deployments: dict[str, dict] | None = None

    @property
    def here(self) -> bool:
        return self.deployments is not None

    def target_replicas(self, name: str) -> int:
        return int(self.deployments[name].get("num_replicas", 1))

    def status(self) -> dict[str, tuple[str, dict]]:
        """Each deployment's Serve status and replica states (e.g. HEALTHY, {RUNNING: 1})."""
        from ray import serve

        deployments = serve.status().applications[APP].deployments
        return {
            name: (str(d.status.value if hasattr(d.status, "value") else d.status), dict(d.replica_states))
            for name, d in deployments.items()
        }

    def all_back(self, gone: int | None = None) -> bool:
        """Every deployment HEALTHY with its replicas running, and the process `gone` no longer among them."""
        status = self.status()
        for name in DEPLOYMENTS:
            state, replicas = status.get(name, ("", {}))
            if state != "HEALTHY" or replicas.get("RUNNING", 0) != self.target_replicas(name) or len(replicas) != 1:
                return False
        pids = replica_processes()
        if gone is not None and any(gone in found for found in pids.values()):
            return False
        return all(len(pids.get(name, [])) >= self.target_replicas(name) for name in DEPLOYMENTS)

    def redeploy(self, settings) -> None:
        """The application deployed again with `settings` and the same deployments' options, as `serve deploy` of
        a profile with edited `args:` does: Serve hashes a profile's args into its code version (`serve.run` gives
        a new one too), so every deployment gets a new version and every replica is replaced, at most 20 % of a
        deployment's replicas (at least one) at a time, the old one stopped before the new one starts."""
        from ray import serve

        from deepxray.app import bind_graph

        serve.run(bind_graph(settings, self.deployments), name=APP, route_prefix="/", blocking=False)
        self.settings = settings


def deployments_for(base: dict[str, dict], options: argparse.Namespace) -> dict[str, dict]:
    """The profile's deployments with the run's replica counts, health checks, graceful shutdown and (for
    replica-hang) the debugging hooks allowed in the model replicas."""
    deployments = Layout.parse(options.replicas).profile(base, CPUS) if options.replicas else dict(base)
    deployments = {name: dict(opts) for name, opts in deployments.items()}
    for name, opts in deployments.items():
        if options.health_check:
            opts["health_check_period_s"], opts["health_check_timeout_s"] = options.health_check
        if options.graceful_shutdown is not None:
            opts["graceful_shutdown_timeout_s"] = options.graceful_shutdown
        if options.scenario == "replica-hang" and name in MODEL_DEPLOYMENTS:
            actor = dict(opts.get("ray_actor_options", {}))
            runtime_env = dict(actor.get("runtime_env", {}))
            runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), DEBUG_HOOKS_VARIABLE: "1"}
            actor["runtime_env"] = runtime_env
            opts["ray_actor_options"] = actor
    return deployments


@contextlib.contextmanager
def service_for(options: argparse.Namespace) -> Iterator[Service]:
    """The running service of `--url`, or the application started here (stopped after, Ray too)."""
    if options.url:
        settings, _ = profile(overrides=options.app_args)
        yield Service(options.url.rstrip("/"), settings)
        return
    settings, base = profile(overrides=options.app_args)
    deployments = deployments_for(base, options)
    layout = "-".join(str(deployments[name].get("num_replicas", 1)) for name in DEPLOYMENTS)
    note(f"starting the application (serve_config.yaml, replicas {layout}, {CPUS} CPUs); about a minute")
    with served_application(settings, deployments, cpus=CPUS, timeout_s=READY_TIMEOUT_S) as url:
        note(f"serving at {url}")
        yield Service(url, settings, deployments)


def profile_summary(service: Service) -> dict:
    """What the run's service was configured with (the settings an operator chooses), as Serve deploys them:
    the profile's options over the deployments' decorators."""
    summary: dict[str, Any] = {"stage_timeout_s": service.settings.stage_timeout_s}
    if not service.here:
        return summary
    from ray.serve._private.build_app import build_app

    from deepxray.app import bind_graph

    for deployment in build_app(bind_graph(service.settings, service.deployments), name=APP).deployments:
        config = deployment._deployment_config
        summary[deployment.name] = {
            "replicas": config.num_replicas,
            "health_check_period_s": config.health_check_period_s,
            "health_check_timeout_s": config.health_check_timeout_s,
            "graceful_shutdown_timeout_s": config.graceful_shutdown_timeout_s,
        }
    return summary


# ------------------------------------------------------------------------------------- the second model set


def model_tags(folder: Path) -> dict[str, str]:
    """`name@version` of each model of a model set, from its cards."""
    from deepxray.models.artifacts import read_card
    from deepxray.models.registry import MODEL_NAMES

    return {name: read_card(Path(folder) / name).tag for name in MODEL_NAMES}


def rollout_models(base: Path, cache: Path = CACHE) -> Path:
    """A model set that differs from `base` in the Ratingen scorer only: `base`'s body-part model and detector
    (symbolic links) and the scorer's weights after the first epoch of a short training run (card version
    `...-epoch01`). The training run and its export are made once into `cache` (a few minutes on 2 cores)."""
    from loadtests.harness import models_present

    cache = Path(cache).expanduser()
    trained, epoch1, rollout = cache / "models-small", cache / "models-small-epoch1", cache / "rollout"
    command = [sys.executable, "-m", "deepxray.cli"]
    log = cache / "make.log"
    steps = (
        (
            trained,
            [*command, "train", "all", "--synthetic", "300", "--epochs", "1", "--out", str(trained), "--seed", "0"],
            "training a small model set for 1 epoch (300 phantoms; about 5 minutes on 2 cores, once)",
        ),
        (
            epoch1,
            [*command, "checkpoint", "--models", str(trained), "--epoch", "1", "--out", str(epoch1)],
            "exporting its epoch-1 checkpoint",
        ),
    )
    for folder, step, what in steps:
        if models_present(folder):
            continue
        note(f"making the second model set in {cache}: {what}; output in {log}")
        cache.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as output:
            result = subprocess.run(step, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise Refused(f"making the second model set failed (exit {result.returncode}); see {log}")
    rollout.mkdir(parents=True, exist_ok=True)
    for name, source in model_sources(Path(base), epoch1).items():
        link = rollout / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source.resolve(), target_is_directory=True)
    return rollout


def model_sources(base: Path, changed: Path) -> dict[str, Path]:
    from deepxray.models.registry import MODEL_NAMES

    return {name: (changed if name == ROLLOUT_MODEL else base) / name for name in MODEL_NAMES}


# --------------------------------------------------------------------------------------------- the scenarios


def wait_for(condition: Callable[[], Any], timeout_s: float, period_s: float = 0.5) -> Any:
    """`condition()`'s first true value within `timeout_s`, else None (errors count as not yet)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = condition()
            if value:
                return value
        time.sleep(period_s)
    return None


def recovery(
    service: Service, load: Load, readiness: Readiness, t_fault: float, gone: int | None = None
) -> dict[str, float | None]:
    """Waits until the service is whole again after a fault at `t_fault`: seconds until the first 200 to a
    request sent after it, `/readyz` answering 200, and (a service started here) every deployment back to its
    replicas, HEALTHY, without the process `gone` (None: not within RECOVERY_TIMEOUT_S). `healthy_again_s` is
    filled in by `healthy_again` once the load has stopped."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    back = None
    if service.here:
        back = wait_for(lambda: service.all_back(gone) and load.now(), RECOVERY_TIMEOUT_S, 0.5)
    first_200 = wait_for(lambda: load.first_200_after(t_fault), max(1.0, deadline - time.monotonic()), 0.2)
    ready = wait_for(lambda: readiness.ready_after(t_fault), max(1.0, deadline - time.monotonic()), 0.2)
    times = {"first_200_s": first_200, "readyz_s": ready}
    if service.here:
        times["replicas_back_s"] = back
    return {key: (None if value is None else round(value - t_fault, 2)) for key, value in times.items()}


def healthy_again(faults: list[dict], attempts: list[Attempt], end: float) -> None:
    """Sets each fault's `failed` and `healthy_again_s`. A failure belongs to the last fault before it ended
    (requests in flight at a fault fail after it); `healthy_again_s` is the time from the fault until the service
    answers normally again: the later of `/readyz` answering 200 and the first 200 to a request sent after the
    fault's last failure (and before the next fault); None when that never happened."""
    for k, fault in enumerate(faults):
        at = fault["at_s"]
        until = faults[k + 1]["at_s"] if k + 1 < len(faults) else end
        failed = [a.start for a in attempts if a.outcome in FAILURE_KINDS and at <= a.end < until]
        after = max([at, *failed])
        answered = [a.end for a in attempts if a.status == 200 and after <= a.start < until]
        ready = fault.get("readyz_s")
        fault["failed"] = len(failed)
        fault["healthy_again_s"] = round(max(min(answered) - at, ready), 2) if answered and ready is not None else None


def replica_kill(service: Service, load: Load, readiness: Readiness, options) -> list[dict]:
    victims = ("RatingenScore", "Ingress") if options.short else (*MODEL_DEPLOYMENTS, "Ingress")
    faults = []
    for name in victims:
        time.sleep(options.settle_s)
        pid = replica_processes().get(name, [None])[0]
        if pid is None:
            raise RuntimeError(f"no replica process of {name} found")
        t_fault = load.now()
        os.kill(pid, signal.SIGKILL)
        note(f"killed {name}'s replica (pid {pid}) at {t_fault:.1f} s; waiting until healthy again")
        times = recovery(service, load, readiness, t_fault, gone=pid)
        note(f"whole again: {times}")
        faults.append({"fault": f"SIGKILL {name} replica", "pid": pid, "at_s": round(t_fault, 2), **times})
    time.sleep(options.settle_s)
    return faults


def replica_hang(service: Service, load: Load, readiness: Readiness, options) -> list[dict]:
    from ray import serve

    time.sleep(options.settle_s)
    handle = serve.get_deployment_handle(options.target, app_name=APP)
    t_fault = load.now()
    hung = handle.debug_hang.remote(HANG_S).result(timeout_s=30)
    note(f"{options.target}'s replica pid {hung['pid']} hangs from {t_fault:.1f} s; waiting for Serve to replace it")
    times = recovery(service, load, readiness, t_fault, gone=hung["pid"])
    note(f"whole again: {times}")
    time.sleep(options.settle_s)
    return [{"fault": f"hang {options.target} replica", "pid": hung["pid"], "at_s": round(t_fault, 2), **times}]


def rolling_update(service: Service, load: Load, readiness: Readiness, options) -> list[dict]:
    original = service.settings
    base = original.models_folder()
    second = options.rollout_models
    updated, _ = profile(overrides={**options.app_args, "models_dir": str(Path(second).resolve())})
    steps = []
    changes = [(updated, second)] if options.short else [(updated, second), (original, base)]  # short: no way back
    for settings, folder in changes:
        time.sleep(options.settle_s)
        tags = model_tags(folder)
        t_change = load.now()
        note(f"deploying models_dir={folder} ({tags[ROLLOUT_MODEL]}) at {t_change:.1f} s")
        service.redeploy(settings)
        deployed = load.now()
        new = tuple(sorted(tags.items()))
        seen = wait_for(
            lambda new=new, t=t_change: min(
                (a.end for a in load.snapshot() if a.models == new and a.start >= t), default=None
            ),
            RECOVERY_TIMEOUT_S,
            0.2,
        )
        times = recovery(service, load, readiness, t_change)
        note(
            f"deployed in {deployed - t_change:.1f} s; first answer of the new set after "
            f"{None if seen is None else round(seen - t_change, 2)} s"
        )
        steps.append(
            {
                "fault": f"deploy models_dir {folder}",
                "models": dict(tags),
                "at_s": round(t_change, 2),
                "serve_run_s": round(deployed - t_change, 2),
                "first_answer_of_new_set_s": None if seen is None else round(seen - t_change, 2),
                **times,
            }
        )
    time.sleep(options.settle_s)
    return steps


def memory_sample() -> dict[str, float]:
    """RSS in MiB of every replica, keyed `Deployment pid`."""
    return {
        f"{name} {pid}": mb
        for name, pids in sorted(replica_processes().items())
        for pid in pids
        if (mb := rss_mb(pid)) is not None
    }


def saturation(url: str, images: list[PoolImage], clients: int, timeout_s: float, seconds: float) -> float:
    """Answers a second of the closed loop with `clients` clients, over `seconds` after a warm-up of 5 s."""
    load = Load(url, images, clients, timeout_s).start()
    time.sleep(5.0 + seconds)
    load.stop()
    answered = [a for a in load.attempts if a.outcome in ANSWERED and 5.0 <= a.end <= 5.0 + seconds]
    return len(answered) / seconds


def soak(service: Service, load: Load, options, memory: dict) -> None:
    """`options.duration_s` of load, every replica's RSS sampled `MEMORY_SAMPLES` times every `options.sample_s`
    (into `memory`)."""
    samples = memory.setdefault("samples", [])
    step = options.sample_s / MEMORY_SAMPLES
    for k in itertools.count():
        due = k * step
        if due >= options.duration_s:
            break
        time.sleep(max(0.0, due - load.now()))
        if service.here:
            samples.append({"at_s": round(load.now(), 1), "rss_mb": memory_sample()})
            if k % MEMORY_SAMPLES == 0:
                note(f"soak {load.now():.0f} s: {len(load.attempts)} requests; RSS {samples[-1]['rss_mb']}")
    time.sleep(max(0.0, options.duration_s - load.now()))


# ------------------------------------------------------------------------------------------------ summary


def failures_of(attempts: list[Attempt]) -> list[Attempt]:
    return [a for a in attempts if a.outcome in FAILURE_KINDS]


def summarise(options, service: Service, load: Load, readiness: Readiness, faults: list[dict], extra: dict) -> dict:
    attempts = sorted(load.attempts, key=lambda a: a.start)
    failures = failures_of(attempts)
    answered = [a.latency_s for a in attempts if a.outcome in ANSWERED]
    limit = service.settings.stage_timeout_s + HANG_EXTRA_S
    healthy_again(faults, attempts, load.now())
    tuples = Counter(", ".join(tag for _, tag in a.models) for a in attempts if a.models)
    known = extra.pop("known_versions", None)
    mixed = [a for a in attempts if a.models and (a.mixed or (known and a.models not in known))]
    summary: dict[str, Any] = {
        "scenario": options.scenario,
        "url": service.url,
        "started_here": service.here,
        "short": options.short,
        "clients": options.clients,
        "duration_s": round(load.now(), 1),
        "profile": profile_summary(service),
        "requests_sent": len(attempts),
        "uploads": load.uploads,
        "answered": dict(sorted(Counter(str(a.status) for a in attempts if a.outcome in ANSWERED).items())),
        "retried_503": len([a for a in attempts if a.outcome == "retried_503"]),
        "retried_503_by_error": dict(Counter(a.detail for a in attempts if a.outcome == "retried_503")),
        "failed": {kind: sum(a.outcome == kind for a in attempts) for kind in FAILURE_KINDS},
        "failed_by_detail": dict(Counter(f"{a.outcome}: {a.detail}" for a in failures)),
        "failed_at_s": [round(a.start, 1) for a in failures][:50],
        "longest_latency_s": round(max((a.latency_s for a in attempts), default=0.0), 2),
        "answer_latency_s": {
            f"p{q}": None if (value := percentile(answered, q)) is None else round(value, 2) for q in (50, 95, 99)
        },
        "readyz_not_ready_s": round(readiness.not_ready_s(), 1) if readiness else None,
        "faults": faults,
        "answers_by_models": dict(tuples.most_common()),
        "mixed_version_answers": len(mixed),
        **extra,
    }
    summary["checks"] = checks(options, summary, limit)
    summary["passed"] = not any(line.startswith("FAIL") for line in summary["checks"])
    return summary


def line(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'} {text}"


def checks(options, summary: dict, limit: float) -> list[str]:
    """One PASS or FAIL line per condition of the scenario (INFO: a figure that is no condition, SKIP: a
    condition not measured)."""
    longest, timeouts = summary["longest_latency_s"], summary["failed"]["timeout"]
    lines = [
        line(
            longest <= limit and timeouts == 0,
            f"no request hangs: longest {longest:g} s, {timeouts} timed out (limit stage_timeout_s + "
            f"{HANG_EXTRA_S:g} = {limit:g} s)",
        )
    ]
    failed = sum(summary["failed"].values())
    uploads = max(1, summary["uploads"])
    if options.scenario in ("replica-kill", "replica-hang"):
        for fault in summary["faults"]:
            cost = f"{fault['fault']} cost {fault['failed']} of {summary['uploads']} uploads"
            cost += f" ({100 * fault['failed'] / uploads:.1f} %)"
            if fault["fault"].startswith("SIGKILL Ingress"):
                # Not a model replica: the requests in flight in it are lost (Serve's proxy answers them 500).
                lines.append(f"INFO {cost}: the requests in flight in the ingress replica")
            else:
                lines.append(
                    line(fault["failed"] <= MAX_FAILED_SHARE * uploads, f"{cost}, at most {MAX_FAILED_SHARE:.0%}")
                )
            healthy = fault["healthy_again_s"]
            lines.append(
                line(
                    healthy is not None and healthy <= HEALTHY_WITHIN_S,
                    f"healthy again within {HEALTHY_WITHIN_S:g} s after {fault['fault']}: {healthy} s",
                )
            )
    if options.scenario == "rolling-update":
        lines.append(
            line(
                failed == 0,
                f"0 lost in the rolling update: {failed} of {summary['uploads']} uploads "
                f"unanswered or answered wrong ({summary['retried_503']} 503s retried)",
            )
        )
        for step in summary["faults"]:
            lines.append(
                line(
                    step["first_answer_of_new_set_s"] is not None,
                    f"answers come from the new set after {step['fault']}: first after "
                    f"{step['first_answer_of_new_set_s']} s",
                )
            )
        mixed = summary["mixed_version_answers"]
        lines.append(line(mixed == 0, f"0 mixed-version answers: {mixed}"))
    if options.scenario == "soak":
        lines.append(line(failed == 0, f"0 failures in the soak: {failed} of {summary['uploads']} uploads"))
        growth = summary.get("memory_growth_pct") or {}
        if growth:
            worst = max(growth, key=lambda k: growth[k] if growth[k] is not None else -1e9)
            lines.append(
                line(
                    all(g is not None and g <= MAX_MEMORY_GROWTH_PCT for g in growth.values()),
                    f"memory growth at most {MAX_MEMORY_GROWTH_PCT:g} % from {summary['memory_from_s']:g} s "
                    f"to the end: largest {growth[worst]} % ({worst})",
                )
            )
        else:
            lines.append("SKIP memory growth: not measured (a service not started here, or too short a soak)")
    return lines


def memory_figures(samples: list[dict], duration_s: float, period_s: float) -> dict:
    """Each replica's RSS per period (`period_s`, a minute in a soak of 10: the median of the period's samples,
    so that the films in flight at one instant, each tens of MiB in the ingress, do not pass for growth), and
    its growth from minute 2 (the period holding 120 s, or a third of a shorter soak) to the last period, in %."""
    periods: dict[int, list[dict]] = {}
    for sample in samples:
        periods.setdefault(int(sample["at_s"] // period_s), []).append(sample["rss_mb"])
    order = sorted(periods)
    replicas = sorted({key for sample in samples for key in sample["rss_mb"]})
    per_replica = {}
    for key in replicas:
        medians = []
        for period in order:
            values = [rss[key] for rss in periods[period] if key in rss]
            medians.append(round(float(np.median(values)), 1) if values else None)
        per_replica[key] = medians
    base = int(min(120.0, duration_s / 3) // period_s)
    base_index = order.index(base) if base in order else None
    growth = {}
    if base_index is not None and base_index < len(order) - 1:
        for key, values in per_replica.items():
            first, last = values[base_index], values[-1]
            growth[key] = round(100 * (last - first) / first, 2) if first and last else None
    return {
        "memory_period_s": period_s,
        "memory_at_s": [period * period_s for period in order],
        "memory_rss_mb": per_replica,
        "memory_from_s": base * period_s if base_index is not None else None,
        "memory_growth_pct": growth,
    }


def to_json(value: Any, indent: int = 0, width: int = 116) -> str:
    """JSON as `json.dumps(indent=2)` writes it, but shorter to read and paste: a list or object that fits on
    one line within `width` is written on one line, and a long list of numbers or strings fills its lines."""
    flat = json.dumps(value)
    if not isinstance(value, dict | list) or len(flat) + indent <= width:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, list) and not any(isinstance(item, dict | list) for item in value):
        lines, current = [], ""
        for item in map(json.dumps, value):
            if current and len(pad) + len(current) + len(item) + 2 > width:
                lines.append(current)
                current = ""
            current = f"{current} {item}," if current else f"{item},"
        lines.append(current.rstrip(","))
        return "[\n" + "\n".join(pad + line for line in lines) + "\n" + " " * indent + "]"
    if isinstance(value, list):
        items = [pad + to_json(item, indent + 2, width) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    items = [f"{pad}{json.dumps(key)}: {to_json(item, indent + 2, width)}" for key, item in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"


# ---------------------------------------------------------------------------------------------------- main


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    from loadtests.run import parse_duration
    from loadtests.scaling import parse_app_args

    parser = argparse.ArgumentParser(prog="python -m loadtests.faults", description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument(
        "--duration",
        default=None,
        help="soak: its length (default 600s; --short 60s); the other scenarios: seconds of load "
        f"before each fault and after the last (default {DEFAULT_SETTLE_S:g}s)",
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--short", action="store_true", help="the short form for CI")
    parser.add_argument("--url", default=None, help="a running service instead of one started here")
    parser.add_argument(
        "--rate", type=float, default=None, help="soak: uploads a second (default: 80 %% of saturation)"
    )
    parser.add_argument(
        "--target", choices=MODEL_DEPLOYMENTS, default="RatingenScore", help="replica-hang: whose replica"
    )
    parser.add_argument("--replicas", default=None, help="replicas I-B-J-R (default: serve_config.yaml's)")
    parser.add_argument(
        "--health-check",
        default=None,
        metavar="PERIOD:TIMEOUT",
        help="health_check_period_s and health_check_timeout_s of every deployment",
    )
    parser.add_argument(
        "--graceful-shutdown",
        type=float,
        default=None,
        metavar="S",
        help="graceful_shutdown_timeout_s of every deployment",
    )
    parser.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE", help="an application setting")
    parser.add_argument("--pool", type=Path, default=DEFAULT_POOL, help="phantom pool (generated when missing)")
    parser.add_argument("--groups", default="all", help="pool groups: png,jpeg,dicom,others or all")
    parser.add_argument(
        "--rollout-models",
        type=Path,
        default=None,
        help="rolling-update: the model set to roll to (default: made once in ~/.cache/deepxray)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the summary (JSON) to this file")
    options = parser.parse_args(argv)
    try:
        options.app_args = parse_app_args(options.arg)
        options.groups_list = parse_groups(options.groups)
        if options.replicas:
            Layout.parse(options.replicas)
        if options.health_check:
            period, _, timeout = options.health_check.partition(":")
            options.health_check = (float(period), float(timeout))
    except ValueError as error:
        parser.error(str(error))
    if options.clients < 1:
        parser.error("--clients must be at least 1")
    duration = parse_duration(options.duration) if options.duration else None
    if options.scenario == "soak":
        options.duration_s = duration or (SHORT_SOAK_S if options.short else 600.0)
        options.sample_s = min(60.0, options.duration_s / 6)
    options.settle_s = duration or (SHORT_SETTLE_S if options.short else DEFAULT_SETTLE_S)
    return options


def run(options: argparse.Namespace) -> dict:
    """Runs the scenario on the service it starts (or `--url`'s) and returns its summary (Refused when it cannot
    run as asked)."""
    if options.url and options.scenario in NEEDS_PROCESSES:
        raise Refused(
            f"{options.scenario} needs the replicas' processes and handles, so it runs only against a service it "
            "starts itself: leave out --url"
        )
    images = prepare(options)
    with service_for(options) as service:
        return run_on(service, images, options)


def prepare(options: argparse.Namespace) -> list[PoolImage]:
    """What a run needs before the service starts: the pool's films (the pool made when missing) and, for
    rolling-update, the second model set (made once: a training run beside the service would slow both)."""
    pool = ensure_pool(options.pool, progress=True)
    if options.scenario == "rolling-update" and options.rollout_models is None:
        options.rollout_models = rollout_models(profile(overrides=options.app_args)[0].models_folder())
    return load_pool(pool, options.groups_list)


def run_on(service: Service, images: list[PoolImage], options: argparse.Namespace) -> dict:
    """The scenario of `options` against `service` (`service_for`; tests run several on one), its summary."""
    limit = service.settings.stage_timeout_s + HANG_EXTRA_S
    extra: dict[str, Any] = {}
    rate = options.rate
    if options.scenario == "soak" and rate is None:
        seconds = 10.0 if options.short else SATURATION_S
        note(f"measuring saturation: {options.clients} clients for {seconds:g} s")
        measured = saturation(service.url, images, options.clients, limit, seconds)
        rate = round(SATURATION_FRACTION * measured, 3)
        extra["saturation_per_s"] = round(measured, 3)
        note(f"saturation {measured:.2f} answers/s; soaking at {rate:g}/s")
    if options.scenario == "soak":
        extra["rate_per_s"] = rate
    if options.scenario == "rolling-update":
        folders = (service.settings.models_folder(), options.rollout_models)
        extra["known_versions"] = {tuple(sorted(model_tags(folder).items())) for folder in folders}
    load = Load(service.url, images, 2 * options.clients if rate else options.clients, limit, rate)
    with Readiness(service.url, load.now) as readiness:
        load.start()
        note(
            f"load started: {rate:g} films/s, at most {load.clients} at once"
            if rate
            else f"load started: {load.clients} clients"
        )
        faults: list[dict] = []
        memory: dict = {}
        try:
            if options.scenario == "replica-kill":
                faults = replica_kill(service, load, readiness, options)
            elif options.scenario == "replica-hang":
                faults = replica_hang(service, load, readiness, options)
            elif options.scenario == "rolling-update":
                faults = rolling_update(service, load, readiness, options)
            else:
                soak(service, load, options, memory)
        finally:
            note("stopping the load (waiting for the films in flight)")
            load.stop()
        if memory.get("samples"):
            extra.update(memory_figures(memory["samples"], options.duration_s, options.sample_s))
        return summarise(options, service, load, readiness, faults, extra)


@contextlib.contextmanager
def summary_alone_on_stdout() -> Iterator[None]:
    """Everything written to stdout meanwhile goes to stderr, at the level of the file descriptor: Ray's driver
    prints its processes' messages ("(raylet) A worker died ...") to stdout, and the processes it starts inherit
    it; stdout is to carry the JSON summary alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    try:
        with summary_alone_on_stdout():
            summary = run(options)
    except Refused as error:
        print(f"faults: {error}", file=sys.stderr)
        return 2
    text = to_json(summary)
    print(text)
    if options.out:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(text + "\n", encoding="utf-8")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
