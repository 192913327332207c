"""Latency of one radiograph: the whole pipeline in one process against the served application over HTTP.

For the same full-size (2560 x 2048) 16-bit PNG phantom of a left hand, a JPEG of it, and a 16-bit PNG film of
both hands (2560 x 3584, each hand scored on its own):

- in-process: `local_models` + `deepxray.pipeline.score_radiograph` on the file's bytes (decode included), the
  TensorFlow threads set to all cores, after warm-up;
- served: `POST /score` over HTTP, one request at a time, the file as multipart and as the body itself, against
  `--url`, or against the application this script starts itself (Ray with `--cpus` CPUs, the one-machine profile
  and `args` of serve_config.yaml) on a free port, or on `--port`, which it refuses when another service holds it
  (its figures would be that one's). The proxy is whatever the environment selects for the Ray started here:
  `RAY_SERVE_ENABLE_HA_PROXY=1` for HAProxy, `RAY_SERVE_THROUGHPUT_OPTIMIZED=1` for Serve's throughput-optimised
  mode; the table's heading names them.

Prints p50 and p95 side by side with the served/in-process ratio of the medians. With `--fanout-runs N`, N pairs
of requests to two more ingresses on the same model replicas, alike but for `crops_per_call` (1: a call per
joint; 10: a call per hand), alternating. Then the latency that access control adds per request (`deepxray.api.auth`, with signing keys, a JWKS, tokens and an API key made here in a
temporary folder):

- in-process: the median of `Access.principal` over `--auth-calls` requests for an RS256 and an ES256 access
  token (auth_mode jwt, JWKS file) and an API key (auth_mode api_key), against auth_mode none;
- served (an application started here; `--auth-runs 0` skips it): two more ingresses on the same model
  replicas, alike but for auth_mode (none at /noauth, jwt at /jwt), sent the same PNG in alternating order,
  then the same for `GET /v1/models`; p50 of each, their difference and the median of the paired differences.

With `--store-runs N`, what keeping every scored film adds (`store_cases`, a SQLite file in a temporary folder,
previews kept): in-process, the median of the ingress's work after scoring (`CaseDesk.additions`, 2N calls, with
and without the picture for `?overlay=true`); served, two more ingresses alike but for `store_cases`, sent the
same PNG in alternating order, N pairs.

With `--soak N` it then sends N more requests and prints the memory (RSS) of each replica of a self-started
application after request 200 and after request N, and the total of all Serve processes.

The timings are from this machine's CPU (whatever else runs on it counts too); they are not a property of the
models alone. Figures measured here are in docs/benchmarks.md ("Serving latency").

    python -m benchmarks.serve_latency --runs 30
    python -m benchmarks.serve_latency --url http://127.0.0.1:8000 --runs 30
    python -m benchmarks.serve_latency --runs 30 --soak 1000
    python -m benchmarks.serve_latency --runs 30 --auth-runs 0     # token validation in-process only
    python -m benchmarks.serve_latency --runs 30 --auth-runs 0 --store-runs 40   # what keeping cases adds
    python -m benchmarks.serve_latency --runs 30 --auth-runs 0 --fanout-runs 30  # crops_per_call 1 against 10
    RAY_SERVE_ENABLE_HA_PROXY=1 python -m benchmarks.serve_latency --runs 30 --auth-runs 0   # HAProxy in front
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from loadtests.harness import (
    APP,
    PortTaken,
    Timing,
    claim_port,
    outcome_of,
    percentile,
    profile,
    served_application,
    time_calls,
    time_image,
    wait_ready,
)


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


def in_process(files: dict[str, bytes], models, settings, runs: int, warmup: int) -> dict[str, Timing]:
    from deepxray.imaging import ImagingError
    from deepxray.pipeline import ScoringError, score_radiograph

    def once(data: bytes) -> str:
        try:
            asyncio.run(score_radiograph(data, models, settings))
            return "200"
        except (ImagingError, ScoringError) as exc:
            return f"{exc.status} {exc.code}"

    return {name: time_calls(lambda data=data: once(data), runs, warmup) for name, data in files.items()}


BODIES = ("multipart", "raw")  # how the served requests carry the film: the field `xray`, or the body itself


def served(files: dict[str, bytes], url: str, runs: int, warmup: int) -> dict[tuple[str, str], Timing]:
    """Each file sent as multipart and as the body itself, by (file, body)."""
    timings = {}
    for name, data in files.items():
        media_type = "image/png" if name.startswith("png") else "image/jpeg"
        for body in BODIES:
            raw_type = media_type if body == "raw" else None
            timings[name, body] = time_image(
                url, data, runs, warmup, filename=f"hand.{media_type[6:]}", raw_type=raw_type
            )
    return timings


FANOUT_ROUTES = {1: "/perjoint", 10: "/perhand"}


def served_fanout(url: str, settings, deployments, data: bytes, runs: int, warmup: int) -> Paired:
    """POST /score of `data` (the body itself) to two ingresses alike but for `crops_per_call` (1 at /perjoint,
    10 at /perhand), alternating."""
    variants = {route: {"crops_per_call": crops} for crops, route in FANOUT_ROUTES.items()}
    with twin_ingresses(url, settings, deployments, variants) as urls:
        return time_pairs(urls[FANOUT_ROUTES[1]], urls[FANOUT_ROUTES[10]],
                          lambda c: outcome_of(c.post("/score", content=data, headers={"content-type": "image/png"})),
                          runs, warmup)  # fmt: skip


# ------------------------------------------------------------------------------------------- access control

ISSUER = "https://id.example.org/realms/benchmark"
AUDIENCE = "deepxray"
AUTH_ROUTES = {"none": "/noauth", "jwt": "/jwt"}


def credentials(folder: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """Signing keys made here (RSA 2048 and P-256), their JWKS and an API keys file in `folder`: the auth
    settings by mode, and a credential (scopes score and read, valid for a day) by kind."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from deepxray.api.keys import key_line, new_key

    private_keys = {
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
    }
    now, jwks, tokens = int(time.time()), [], {}
    for algorithm, private in private_keys.items():
        public = json.loads(jwt.get_algorithm_by_name(algorithm).to_jwk(private.public_key()))
        kid = f"benchmark-{algorithm.lower()}"
        jwks.append({**public, "kid": kid, "use": "sig", "alg": algorithm})
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "benchmark", "iat": now, "exp": now + 86400,
                  "scope": "score read"}  # fmt: skip
        tokens[f"JWT {algorithm}"] = jwt.encode(claims, private, algorithm=algorithm, headers={"kid": kid})
    (folder / "jwks.json").write_text(json.dumps({"keys": jwks}), encoding="utf-8")
    api_key = new_key()
    (folder / "api_keys").write_text(key_line("benchmark", api_key, {"score", "read"}) + "\n", encoding="utf-8")
    settings = {
        "none": {"auth_mode": "none"},
        "jwt": {"auth_mode": "jwt", "jwks": str(folder / "jwks.json"), "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE},
        "api_key": {"auth_mode": "api_key", "api_keys_file": str(folder / "api_keys")},
    }
    return settings, {"no auth": "", **tokens, "API key": api_key}


def validation_times(auth: dict[str, dict], creds: dict[str, str], calls: int, warmup: int = 100) -> dict[str, Timing]:
    """`Access.principal` (deepxray.api.auth) on a request carrying each credential, `calls` times after `warmup`,
    one at a time on one event loop, as the ingress's route dependency runs it."""
    from starlette.requests import Request

    from deepxray.api.auth import Access
    from deepxray.settings import Settings

    def mode(kind: str) -> str:
        return "none" if kind == "no auth" else "api_key" if kind == "API key" else "jwt"

    async def measure(access: Access, credential: str) -> Timing:
        headers = [(b"authorization", f"Bearer {credential}".encode())] if credential else []
        times = []
        for i in range(warmup + calls):
            request = Request({"type": "http", "method": "POST", "path": "/score", "headers": headers})
            start = time.perf_counter()
            principal = await access.principal(request)
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times.append(elapsed)
        assert "score" in principal.scopes, principal  # the credential passed: its validation was timed
        return Timing(times, "200")

    async def all_kinds() -> dict[str, Timing]:
        return {kind: await measure(Access(Settings(**auth[mode(kind)])), credential)
                for kind, credential in creds.items()}  # fmt: skip

    return asyncio.run(all_kinds())


@contextlib.contextmanager
def twin_ingresses(url: str, settings, deployments, variants: dict[str, dict]) -> Iterator[dict[str, str]]:
    """More applications on the running application's model replicas, each an ingress only, alike (the profile's
    Ingress options, a tenth of a CPU each) but for the settings of its variant: {route: settings}. Yields their
    URLs by route; deletes them after."""
    from ray import serve

    from deepxray.app import MODEL_DEPLOYMENTS
    from deepxray.deployments.ingress import Ingress
    from deepxray.settings import Settings

    running = serve.status().applications[APP].deployments  # the chest-findings model only where the set has it
    handles = {name: serve.get_deployment_handle(deployment.name, app_name=APP)
               for name, deployment in MODEL_DEPLOYMENTS.items() if deployment.name in running}  # fmt: skip
    base = {k: v for k, v in (deployments or {}).get("Ingress", {}).items() if k not in ("name", "num_replicas")}
    actor = {**base.get("ray_actor_options", {}), "num_cpus": 0.1}
    given = settings.model_dump(exclude_unset=True)
    urls = {}
    try:
        for route, variant in variants.items():
            name = route.strip("/")
            ingress = Ingress.options(**{**base, "name": f"{name.capitalize()}Ingress", "ray_actor_options": actor})
            app_settings = Settings.with_environment({**given, **variant})
            serve.run(ingress.bind(**handles, settings=app_settings), name=name, route_prefix=route, blocking=False)
            urls[route] = f"{url}{route}"
        for route_url in urls.values():
            wait_ready(route_url, 300)
        yield urls
    finally:
        for route in urls:
            with contextlib.suppress(Exception):
                serve.delete(route.strip("/"))


@dataclass(frozen=True)
class Paired:
    """Latencies of the same request to two ingresses alike but for one setting (`plain`: without it), sent in
    alternating order."""

    plain: Timing
    other: Timing

    @property
    def paired_difference(self) -> float:
        return percentile([a - p for p, a in zip(self.plain.times, self.other.times, strict=True)], 50)


def time_pairs(plain_url: str, other_url: str, send, runs: int, warmup: int, headers=None) -> Paired:
    """`send(client)` (which answers "200" or what went wrong) against `plain_url` and `other_url` (with
    `headers`) in turn, the first of each pair alternating, `runs` pairs after `warmup`; one connection each."""
    import httpx

    with (
        httpx.Client(base_url=plain_url, timeout=120) as plain,
        httpx.Client(base_url=other_url, timeout=120, headers=headers or {}) as other,
    ):
        times = {"plain": [], "other": []}
        outcomes = {"plain": "200", "other": "200"}
        for i in range(warmup + runs):
            order = (("plain", plain), ("other", other)) if i % 2 == 0 else (("other", other), ("plain", plain))
            for which, client in order:
                start = time.perf_counter()
                answer = send(client)
                elapsed = time.perf_counter() - start
                if answer != "200" and outcomes[which] == "200":
                    outcomes[which] = answer
                if i >= warmup:
                    times[which].append(elapsed)
    return Paired(Timing(times["plain"], outcomes["plain"]), Timing(times["other"], outcomes["other"]))


def served_auth(urls: dict[str, str], token: str, data: bytes, runs: int, warmup: int) -> dict[str, Paired]:
    """POST /score of `data` and GET /v1/models (ten times as many pairs: it is quick), without and with the
    token. Checks first that /jwt really refuses a request without one."""
    import httpx

    refused = httpx.get(f"{urls[AUTH_ROUTES['jwt']]}/v1/models", timeout=30).status_code
    if refused != 401:
        raise RuntimeError(f"the /jwt ingress answered {refused} without a token, not 401: access control is not on")
    none, jwt, headers = urls[AUTH_ROUTES["none"]], urls[AUTH_ROUTES["jwt"]], {"Authorization": f"Bearer {token}"}
    return {
        "POST /score png16": time_pairs(
            none, jwt, lambda c: outcome_of(c.post("/score", files={"xray": ("hand.png", data)})), runs, warmup, headers
        ),
        "GET /v1/models": time_pairs(
            none, jwt, lambda c: outcome_of(c.get("/v1/models")), 10 * runs, 10 * warmup, headers
        ),
    }


def print_auth(local: dict[str, Timing], calls: int, remote: dict[str, Paired] | None) -> None:
    base = local["no auth"].p50
    print(f"\ntoken validation per request, in-process (Access.principal, median of {calls} calls; ms):")
    for kind, timing in local.items():
        added = "" if kind == "no auth" else f"   added {1000 * (timing.p50 - base):+.3f}"
        print(f"  {kind:10s} {1000 * timing.p50:8.3f}{added}")
    if remote is None:
        return
    print("served, alternating requests to two ingresses alike but for auth_mode (none, jwt with an RS256 token); ms:")
    print(
        f"{'request':28s} {'pairs':>5s} {'no auth p50':>12s} {'jwt p50':>8s} {'added p50':>10s} {'paired median':>14s}"
    )
    for name, pair in remote.items():
        print(
            f"{name:28s} {len(pair.plain.times):5d} {1000 * pair.plain.p50:12.2f} {1000 * pair.other.p50:8.2f} "
            f"{1000 * (pair.other.p50 - pair.plain.p50):+10.2f} {1000 * pair.paired_difference:+14.2f}"
        )
        if pair.plain.outcome != "200" or pair.other.outcome != "200":
            print(f"  ! not answered 200: no auth answered {pair.plain.outcome}, jwt {pair.other.outcome}")


STORE_ROUTES = {"off": "/nostore", "on": "/store"}


def keeping_times(data: bytes, models, settings, runs: int, folder: Path) -> dict[str, Timing]:
    """What the ingress does after scoring `data`, in-process (`CaseDesk.additions`: a SQLite store in `folder`,
    previews kept): keeping the case, and keeping it with the picture in the answer (`?overlay=true`)."""
    from deepxray.api.cases import CaseDesk
    from deepxray.cases.store import CaseStore
    from deepxray.pipeline import FilmCapture, score_radiograph
    from deepxray.settings import Settings

    capture = FilmCapture()
    answer = asyncio.run(score_radiograph(data, models, settings, capture=capture))
    keeping = Settings.with_environment({**settings.model_dump(exclude_unset=True), "store_cases": True,
                                         "data_dir": str(folder)})  # fmt: skip
    with CaseStore.open(keeping.case_store_url()) as store:
        desk = CaseDesk(store, keeping)
        return {
            f"keep{' + overlay' if draw else ''}": time_calls(
                lambda draw=draw: (desk.additions(answer, capture, data, draw), "200")[1], runs, 5
            )
            for draw in (False, True)
        }


def served_store(url: str, settings, deployments, data: bytes, runs: int, warmup: int, folder: Path) -> Paired:
    """POST /score of `data` to two ingresses alike but for `store_cases` (off at /nostore; on at /store, SQLite in
    `folder`, previews kept), alternating; checks that the second really kept every case it scored."""
    from deepxray.cases.store import CaseStore
    from deepxray.settings import Settings

    variants = {
        STORE_ROUTES["off"]: {"store_cases": False},
        STORE_ROUTES["on"]: {"store_cases": True, "data_dir": str(folder)},
    }
    with twin_ingresses(url, settings, deployments, variants) as urls:
        paired = time_pairs(urls[STORE_ROUTES["off"]], urls[STORE_ROUTES["on"]],
                            lambda c: outcome_of(c.post("/score", files={"xray": ("hand.png", data)})), runs, warmup)  # fmt: skip
    store = CaseStore.open(Settings(data_dir=folder).case_store_url())
    try:
        kept = store.list_cases(limit=1).total
    finally:
        store.close()
    if kept != runs + warmup:
        raise RuntimeError(f"the /store ingress kept {kept} cases of {runs + warmup} scored")
    return paired


def logged_steps(app: str) -> dict[str, float]:
    """Medians of the step times that the ingress of application `app` logged for its `score` lines (its own
    view of each request, free of the HTTP path's noise), from this Ray session's log folder."""
    import re
    import statistics

    import ray

    # Ray 2.60 has no public call for the session folder of the running Ray (a private one, for a benchmark only).
    folder = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "serve"
    lines = [line for path in folder.glob(f"replica_{app}_*.log") for line in path.read_text().splitlines()
             if " score request_id=" in line]  # fmt: skip
    rows = [dict(re.findall(r"(\w+)_ms=([\d.]+)", line)) for line in lines]
    return {step: statistics.median(float(row[step]) for row in rows) for step in rows[0]} if rows else {}


def print_store(local: dict[str, Timing], pair: Paired | None, steps: dict[str, dict[str, float]] | None) -> None:
    print("\nthe case store (SQLite, previews kept), in-process: CaseDesk.additions after scoring png16; ms:")
    for name, timing in local.items():
        print(f"  {name:16s} p50 {1000 * timing.p50:7.2f}   p95 {1000 * timing.p95:7.2f}   ({len(timing.times)} calls)")
    if pair is None:
        return
    print("\nserved, alternating POST /score png16 to two ingresses alike but for store_cases (SQLite, preview); ms:")
    print(f"{'pairs':>5s} {'store off p50':>14s} {'store on p50':>13s} {'added p50':>10s} {'paired median':>14s}")
    print(
        f"{len(pair.plain.times):5d} {1000 * pair.plain.p50:14.2f} {1000 * pair.other.p50:13.2f} "
        f"{1000 * (pair.other.p50 - pair.plain.p50):+10.2f} {1000 * pair.paired_difference:+14.2f}"
    )
    if pair.plain.outcome != "200" or pair.other.outcome != "200":
        print(f"  ! not answered 200: store off answered {pair.plain.outcome}, store on {pair.other.outcome}")
    if steps:
        print("the two ingresses' own log, medians of the same requests; ms:")
        for name, logged in steps.items():
            print(f"  store {name:4s}" + "".join(f"  {step} {value:6.1f}" for step, value in logged.items()))


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
    parser.add_argument("--auth-calls", type=int, default=2000, help="in-process token validations per credential")
    parser.add_argument(
        "--auth-runs",
        type=int,
        default=None,
        help="pairs of /score requests without and with a token (default: --runs; 0: no served comparison)",
    )
    parser.add_argument(
        "--store-runs",
        type=int,
        default=0,
        help="pairs of /score requests to ingresses without and with the case store (SQLite; 0: none)",
    )
    parser.add_argument(
        "--fanout-runs",
        type=int,
        default=0,
        help="pairs of /score requests to ingresses with crops_per_call 1 and 10 (0: none)",
    )
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

    from deepxray.models.runtime import local_models

    models = local_models(models_dir)
    files = phantom_files(args.seed)
    local = in_process(files, models, settings, args.runs, args.warmup)
    auth_runs = args.runs if args.auth_runs is None else args.auth_runs
    with contextlib.ExitStack() as stack:
        auth_folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deepxray-auth-")))
        auth, creds = credentials(auth_folder)
        validation = validation_times(auth, creds, args.auth_calls)  # before Ray starts: nothing else running
        store_folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deepxray-store-")))
        if args.store_runs > 0:  # also before Ray starts
            keeping = keeping_times(files["png16"], models, settings, 2 * args.store_runs, store_folder / "local")
        try:
            url = args.url or stack.enter_context(served_application(settings, deployments, args.cpus, port))
        except PortTaken as error:
            sys.exit(f"serve_latency: {error}")
        remote = served(files, url, args.runs, args.warmup)
        proxy = "HAProxy" if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" else "Serve's proxy"
        mode = ", throughput-optimised" if os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1" else ""
        print(f"\n{os.cpu_count()} cores; models {models_dir}; {proxy}{mode}; crops_per_call {settings.crops_per_call}")
        print(f"{args.runs} runs after {args.warmup} warm-up; ms")
        print(f"{'file':28s} {'body':9s} {'in-process p50':>15s} {'p95':>7s}   {'served p50':>11s} {'p95':>7s}   "
              f"{'ratio p50':>9s}")  # fmt: skip
        for (name, body), rt in remote.items():
            lt, data = local[name], files[name]
            label = f"{name} ({len(data) / 2**20:.1f} MiB)"
            print(
                f"{label:28s} {body:9s} {1000 * lt.p50:15.0f} {1000 * lt.p95:7.0f}   {1000 * rt.p50:11.0f} "
                f"{1000 * rt.p95:7.0f}   {rt.p50 / lt.p50:9.2f}"
            )
            if lt.outcome != "200" or rt.outcome != "200":
                print(f"  ! not scored: in-process answered {lt.outcome}, served {rt.outcome}; the timings stop there")
        if started_here and args.fanout_runs > 0:
            pair = served_fanout(url, settings, deployments, files["png16"], args.fanout_runs, args.warmup)
            print(
                "\nserved, alternating POST /score png16 (raw body) to two ingresses alike but for crops_per_call; ms:"
            )
            print(f"{'pairs':>5s} {'1 (per joint) p50':>18s} {'10 (per hand) p50':>18s} {'paired median 10 - 1':>21s}")
            print(f"{len(pair.plain.times):5d} {1000 * pair.plain.p50:18.2f} {1000 * pair.other.p50:18.2f} "
                  f"{1000 * pair.paired_difference:+21.2f}")  # fmt: skip
            if pair.plain.outcome != "200" or pair.other.outcome != "200":
                print(f"  ! not answered 200: per joint {pair.plain.outcome}, per hand {pair.other.outcome}")
        paired = None
        if started_here and auth_runs > 0:
            variants = {route: auth[mode] for mode, route in AUTH_ROUTES.items()}
            with twin_ingresses(url, settings, deployments, variants) as urls:
                paired = served_auth(urls, creds["JWT RS256"], files["png16"], auth_runs, args.warmup)
        print_auth(validation, args.auth_calls, paired)
        if args.store_runs > 0:
            pair = None
            if started_here:
                pair = served_store(
                    url, settings, deployments, files["png16"], args.store_runs, args.warmup, store_folder
                )
            else:
                print("the served store comparison needs an application started here (without --url)")
            steps = {name: logged_steps(route.strip("/")) for name, route in STORE_ROUTES.items()} if pair else None
            print_store(keeping, pair, steps)
        if not started_here and auth_runs > 0:
            print("the served comparison needs an application started here (without --url)")
        if args.soak:
            if started_here:
                soak(files["png16"], url, args.soak)
            else:
                print("--soak measures memory only for an application started here")


if __name__ == "__main__":
    main()
