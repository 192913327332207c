"""The service harness, written once for the tests (through tests/conftest.py), the benchmarks and the load tests:
a port to serve on, the serve profile, starting the application on Ray Serve (or any service as a process),
waiting for `/readyz`, and timing the same image sent again and again.

A service may serve HTTPS (`served_application(..., ssl_keyfile=, ssl_certfile=)`, or `service_process(...,
scheme="https")` for `serve run` of a profile with TLS on); it is then waited for with its certificate verified
against a CA file (`ca_file`; a self-signed certificate is its own CA). `/readyz` needs no credential whatever the
service's `auth_mode`, so a service with access control is waited for the same way.

A port it is told to use must be free: a Ray Serve proxy binds its port with SO_REUSEPORT, so a second
application started on the port of one already running (`serve run` on 8000, say) starts without complaint and
the kernel hands the connections to either service: a benchmark would then time someone else's service. So a
taken port is refused before anything starts (`PortTaken`, one line), and once the service is up, any other
process listening on its port is refused too. Without a port, a free one is picked.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HOST = "127.0.0.1"
APP = "deepxray"
READY_TIMEOUT_S = 300
STOP_TIMEOUT_S = 60


class PortTaken(RuntimeError):
    """A port another process holds: the service started there would share it (its message is one line)."""


# ------------------------------------------------------------------------------------------------------ ports


def port_in_use(port: int, host: str = HOST) -> bool:
    """Whether something listens on `port` (or holds it bound). SO_REUSEADDR, as servers set it, so that a port
    with only closed connections lingering (TIME_WAIT) counts as free; a listener, SO_REUSEPORT or not, does not."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    with socket.socket() as probe:  # a listener on another address of this machine (0.0.0.0 against 127.0.0.1)
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1" if host in ("0.0.0.0", "") else host, port)) == 0


def free_port(host: str = HOST) -> int:
    """A free port in 20000-31999: above Ray's worker ports, below the ephemeral range Ray's processes bind."""
    for port in random.Random().sample(range(20000, 32000), 200):
        if not port_in_use(port, host):
            return port
    raise RuntimeError("no free port in 20000-31999")


def claim_port(port: int | None, host: str = HOST) -> int:
    """`port` when it is free (PortTaken when not); a free port when None."""
    if port is None:
        return free_port(host)
    if port_in_use(port, host):
        raise PortTaken(
            f"port {port} on {host} is taken by another service; stop it or choose another port "
            "(without a port a free one is picked)"
        )
    return port


def others_listening(port: int) -> list[str]:
    """The processes listening on TCP `port` that are neither this process nor started by it ("pid command");
    empty when psutil is missing or may not look."""
    try:
        import psutil
    except ImportError:
        return []
    try:
        pids = {c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        me = psutil.Process()
        ours = {me.pid, *(child.pid for child in me.children(recursive=True))}
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return []
    others = []
    for pid in sorted(pids - ours - {None}):
        try:
            others.append(f"{pid} {' '.join(psutil.Process(pid).cmdline())[:80]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            others.append(str(pid))
    return others


def refuse_shared_port(port: int) -> None:
    """PortTaken when a process not started here listens on the port our service listens on."""
    others = others_listening(port)
    if others:
        raise PortTaken(f"port {port} is also served by another process ({'; '.join(others)}): requests would reach it")


# ------------------------------------------------------------------------------------------- profile, readiness


def profile(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None):
    """The serve profile (`deepxray.profiles.ONE_MACHINE_PROFILE` by default) as `Settings` (its `args:` with
    `overrides` over them, the environment filling what both leave out, as the app builder does) and its
    deployments' options by name."""
    from deepxray.profiles import ONE_MACHINE_PROFILE, profile_parts
    from deepxray.settings import Settings

    args, deployments = profile_parts(path or ONE_MACHINE_PROFILE)
    return Settings.with_environment({**args, **(overrides or {})}), deployments


def models_dir() -> Path:
    """The model set a service started here loads: `DEEPXRAY_MODELS_DIR` (`Settings.models_dir`), else the
    shipped models."""
    from deepxray.settings import Settings

    return Settings().models_folder()


def models_present(folder: Path | None = None) -> bool:
    """Whether `folder` (default: `models_dir()`) holds an artifact (model and card) of each of the three models."""
    from deepxray.models.artifacts import CARD_FILE, MODEL_FILE
    from deepxray.models.registry import MODEL_NAMES

    folder = folder or models_dir()
    return all((folder / name / CARD_FILE).is_file() and (folder / name / MODEL_FILE).is_file() for name in MODEL_NAMES)


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, period_s: float = 0.5) -> Any:
    """`condition()`'s first true value, asked every `period_s`; an HTTP or OS error counts as not yet.
    TimeoutError naming `what` after `timeout_s`."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = condition()
            if value:
                return value
        except (httpx.HTTPError, OSError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(period_s)


def client_verify(ca_file: str | Path | None = None) -> ssl.SSLContext | bool:
    """What an httpx client verifies a service's certificate with (its `verify=`): the CAs in `ca_file` (PEM),
    else the system's."""
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else True


def certificate_rejected(error: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind an httpx error, if that is what it was."""
    while error is not None and not isinstance(error, ssl.SSLCertVerificationError):
        error = error.__cause__ or error.__context__
    return error


def wait_ready(
    url: str,
    timeout_s: float = READY_TIMEOUT_S,
    process: subprocess.Popen | None = None,
    ca_file: str | Path | None = None,
) -> None:
    """Until `GET {url}/readyz` answers 200 (it needs no credential); RuntimeError at once if `process` (the
    service) exits first, or if an https `url`'s certificate fails verification against `ca_file` (default: the
    system's CAs): waiting would not change it."""
    import httpx

    def ready() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the service at {url} exited with {process.returncode} before it was ready")
        try:
            return httpx.get(f"{url}/readyz", timeout=10, verify=client_verify(ca_file)).status_code == 200
        except httpx.ConnectError as error:
            if rejected := certificate_rejected(error):
                raise RuntimeError(f"the service at {url} has a certificate not trusted here: {rejected}") from error
            raise

    wait_until(ready, timeout_s, f"{url}/readyz answering 200")


# ------------------------------------------------------------------------------------------ starting services


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary folder to be a service's TMPDIR, removed once the service stopped: TensorFlow writes its
    autograph modules there, and a replica or worker killed at shutdown does not remove its own."""
    with tempfile.TemporaryDirectory(prefix="deepxray-service-") as folder:
        yield Path(folder)


def scratch_env(folder: Path, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables that make `folder` the TMPDIR of a process with environment `env`; Ray's session folders
    stay where they were (RAY_TMPDIR: Ray would follow TMPDIR, and its socket paths must stay short)."""
    return {"TMPDIR": str(folder), "RAY_TMPDIR": env.get("RAY_TMPDIR") or env.get("TMPDIR") or "/tmp"}


@contextlib.contextmanager
def served_application(
    settings,
    deployments: Mapping[str, Mapping[str, Any]] | None = None,
    cpus: int = 2,
    port: int | None = None,
    host: str = HOST,
    timeout_s: float = READY_TIMEOUT_S,
    ssl_keyfile: str | Path | None = None,
    ssl_certfile: str | Path | None = None,
    ca_file: str | Path | None = None,
) -> Iterator[str]:
    """The application (`deepxray.app.bind_graph(settings, deployments)`) on a Ray started here with `cpus`
    CPUs, ready; yields its URL. `port` must be free (PortTaken before Ray starts otherwise); None picks one.
    With `ssl_keyfile` and `ssl_certfile` (PEM) Serve's proxy serves HTTPS only, and the URL is https: it is
    waited for with the certificate verified against `ca_file` (default: `ssl_certfile`, as for a self-signed
    one). Serve and Ray are shut down after, whatever happens."""
    if (ssl_keyfile is None) != (ssl_certfile is None):
        raise ValueError("HTTPS needs both ssl_keyfile and ssl_certfile")
    port = claim_port(port, host)
    http_options: dict[str, Any] = {"host": host, "port": port}
    if ssl_certfile:
        http_options.update(
            ssl_keyfile=str(Path(ssl_keyfile).resolve()), ssl_certfile=str(Path(ssl_certfile).resolve())
        )
    import ray
    from ray import serve

    from deepxray.app import bind_graph

    with scratch_dir() as scratch:
        # "local": a Ray of its own, never one that RAY_ADDRESS or a `ray start` on this machine points at. Its
        # workers' TMPDIR is the scratch folder (env_vars merge with a deployment's own).
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"TMPDIR": str(scratch)}})  # fmt: skip
        try:
            serve.start(http_options=http_options)
            serve.run(bind_graph(settings, deployments), name=APP, route_prefix="/", blocking=False)
            url = f"{'https' if ssl_certfile else 'http'}://{host}:{port}"
            wait_ready(url, timeout_s, ca_file=ca_file or ssl_certfile)
            refuse_shared_port(port)
            yield url
        finally:
            serve.shutdown()
            ray.shutdown()


@contextlib.contextmanager
def served_in_thread(app, host: str = HOST, timeout_s: float = 30) -> Iterator[str]:
    """An ASGI `app` under uvicorn in a thread of this process, on a free port, until the block ends; yields its
    URL. For stand-ins and the API without Ray (tests of clients, the docs page)."""
    import threading

    import uvicorn

    config = uvicorn.Config(app, host=host, port=free_port(host), log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=1)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout_s, "uvicorn starting", period_s=0.02)
        if not server.started:
            raise RuntimeError("uvicorn stopped before it served (see its log above)")
        yield f"http://{host}:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def stop_process_group(process: subprocess.Popen, first: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S):
    """Sends `first` to the process's group (it leads one: `start_new_session`), then SIGKILL after `timeout_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, first)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def service_process(
    command: list[str],
    port: int,
    *,
    host: str = HOST,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    stop_signal: int = signal.SIGTERM,
    timeout_s: float = READY_TIMEOUT_S,
    scheme: str = "http",
    ca_file: str | Path | None = None,
) -> Iterator[subprocess.Popen]:
    """A service run as `command` (serving `scheme`, http or https, on `port`, which must be free), in its own
    process group, until its `/readyz` answers (an https one verified against `ca_file`, default the system's
    CAs); stopped after with `stop_signal` to the group (SIGKILL if it lingers). `env` (default: this process's)
    with a scratch TMPDIR of its own, removed after. Its output goes to `log` when given, else to this
    process's."""
    if scheme not in ("http", "https"):
        raise ValueError(f"scheme is http or https, not {scheme!r}")
    claim_port(port, host)
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(scratch_dir())
        output = stack.enter_context(open(log, "w", encoding="utf-8")) if log else None
        env = dict(os.environ if env is None else env)
        env.update(scratch_env(scratch, env))
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output,
                                   stderr=subprocess.STDOUT if output else None, start_new_session=True)  # fmt: skip
        try:
            wait_ready(f"{scheme}://{host}:{port}", timeout_s, process=process, ca_file=ca_file)
            refuse_shared_port(port)
            yield process
        finally:
            stop_process_group(process, stop_signal)


# -------------------------------------------------------------------------------------------------- timing


def percentile(values, q: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least q % of the values at or below it; NumPy's
    "inverted_cdf"); None for no values."""
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q, method="inverted_cdf"))


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed call, and what the calls answered: "200", or the first other answer."""

    times: list[float]
    outcome: str

    @property
    def p50(self) -> float:
        return percentile(self.times, 50)

    @property
    def p95(self) -> float:
        return percentile(self.times, 95)

    @property
    def mean(self) -> float:
        return float(np.mean(self.times))


def time_calls(call: Callable[[], str], runs: int, warmup: int = 0) -> Timing:
    """`call` (which answers "200" or what went wrong) `warmup` times untimed, then `runs` times timed, one after
    another: the same work again and again, as the original study timed an image."""
    times, outcome = [], "200"
    for i in range(warmup + runs):
        start = time.perf_counter()
        answer = call()
        elapsed = time.perf_counter() - start
        if answer != "200" and outcome == "200":
            outcome = answer
        if i >= warmup:
            times.append(elapsed)
    return Timing(times, outcome)


def time_image(
    url: str, data: bytes, runs: int, warmup: int = 0, filename: str = "hand.png", raw_type: str | None = None
) -> Timing:
    """`POST {url}/score` of the same upload `runs` times after `warmup`, one at a time (one HTTP connection):
    multipart, or the file as the body itself with Content-Type `raw_type`."""
    import httpx

    with httpx.Client(base_url=url, timeout=120) as client:

        def upload() -> str:
            if raw_type:
                return outcome_of(client.post("/score", content=data, headers={"content-type": raw_type}))
            return outcome_of(client.post("/score", files={"xray": (filename, data)}))

        return time_calls(upload, runs, warmup)


def outcome_of(response) -> str:
    """ "200", or the status and the API's error code (or the start of the body) of another answer."""
    if response.status_code == 200:
        return "200"
    try:
        error = response.json().get("error", "")
    except ValueError:
        error = response.text[:100]
    return f"{response.status_code} {error}".strip()
