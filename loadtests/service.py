"""Starting what the scaling benchmark measures, and always stopping it: the Ray Serve application in a given
replica layout, and the monolith baseline under uvicorn. Also where each process's CPU time goes."""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = "deepxray"
DEPLOYMENTS = ("Ingress", "BodyPart", "JointDetection", "RatingenScore")
READY_TIMEOUT_S = 300


def free_port() -> int:
    """A free port in 20000-31999: above Ray's worker ports, below the ephemeral range Ray's processes bind."""
    for port in random.Random().sample(range(20000, 32000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-31999")


def shipped_config() -> tuple[dict, dict]:
    """The `args` and the deployments (by name) of serve_config.yaml, the one-machine profile."""
    import yaml

    application = yaml.safe_load((ROOT / "serve_config.yaml").read_text(encoding="utf-8"))["applications"][0]
    return dict(application["args"]), {d["name"]: d for d in application["deployments"]}


@dataclass(frozen=True)
class Layout:
    """Replicas of Ingress, BodyPart, JointDetection and RatingenScore, written `I-B-J-R` (e.g. `2-1-1-1`)."""

    replicas: tuple[int, int, int, int]

    @classmethod
    def parse(cls, text: str) -> Layout:
        parts = text.strip().split("-")
        if len(parts) != 4 or not all(p.isdigit() and int(p) >= 1 for p in parts):
            raise ValueError(f"a layout is four replica counts I-B-J-R, e.g. 2-1-1-1; got {text!r}")
        return cls(tuple(int(p) for p in parts))

    @property
    def name(self) -> str:
        return "-".join(map(str, self.replicas))

    def profile(self, base: dict, cpus: float, overrides: dict[str, dict] | None = None) -> dict:
        """`base` (serve_config.yaml's deployments) with these replica counts. Each replica keeps its CPU share
        of the base unless all of them would reserve more than `cpus`: then every share shrinks alike, so Ray
        can place them (the shares are reservations; TensorFlow runs one thread per replica either way)."""
        shares = {name: float(base[name].get("ray_actor_options", {}).get("num_cpus", 1.0)) for name in DEPLOYMENTS}
        total = sum(n * shares[name] for name, n in zip(DEPLOYMENTS, self.replicas, strict=True))
        scale = min(1.0, cpus / total)
        profile = {}
        for name, n in zip(DEPLOYMENTS, self.replicas, strict=True):
            options = {**base[name], **(overrides or {}).get(name, {}), "num_replicas": n}
            actor = dict(options.get("ray_actor_options", {}))
            # Rounded down: a sum a hair over `cpus` would leave a replica that Ray can never place.
            actor["num_cpus"] = math.floor(shares[name] * scale * 1000) / 1000
            options["ray_actor_options"] = actor
            profile[name] = options
        return profile


def wait_ready(url: str, timeout_s: float = READY_TIMEOUT_S, process: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} was not ready within {timeout_s} s")


@contextlib.contextmanager
def ray_application(
    layout: Layout, cpus: int, args_overrides: dict | None = None, deployment_overrides: dict | None = None
) -> Iterator[str]:
    """The application in `layout` on a Ray started here with `cpus` CPUs; Serve and Ray shut down after.
    `deployment_overrides` (by deployment name) replace options of serve_config.yaml's, e.g. queue limits."""
    import ray
    from ray import serve

    from deepxray.app import AppArgs, bind_graph

    args, base = shipped_config()
    app_args = AppArgs.model_validate({**args, **(args_overrides or {})})
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(
            bind_graph(app_args, layout.profile(base, cpus, deployment_overrides)),
            name=APP,
            route_prefix="/",
            blocking=False,
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


@contextlib.contextmanager
def monolith(workers: int, cores: int, app_args: dict | None = None) -> Iterator[str]:
    """The monolith under uvicorn with `workers` processes, ready (every worker loaded its models); stopped after
    by terminating its process group. Its arguments are serve_config.yaml's `args:` with `app_args` over them,
    as the served application's, passed the way the app builder reads them (`DEEPXRAY_<NAME>`)."""
    from deepxray.app import ENV_PREFIX
    from loadtests.monolith import READY_LINE

    args, _ = shipped_config()
    env = {ENV_PREFIX + name.upper(): str(value) for name, value in {**args, **(app_args or {})}.items()}

    port = free_port()
    log_path = ROOT / "build" / f"monolith-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "loadtests.monolith", "--workers", str(workers), "--cores", str(cores)]
    command += ["--port", str(port)]
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process=process)
        # /readyz answers as soon as one worker is up; the others take a few seconds more.
        deadline = time.monotonic() + READY_TIMEOUT_S
        while log_path.read_text(encoding="utf-8").count(READY_LINE) < workers:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"not every monolith worker started; see {log_path}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# -------------------------------------------------------------------------------------------- where CPU goes


def role_of(cmdline: list[str]) -> str:
    """What a process under this one is: a Serve replica (by deployment), Ray's proxy or controller, a monolith
    worker, or the rest of Ray (raylet, GCS, idle workers)."""
    title = cmdline[0] if cmdline else ""
    if title.startswith("ray::ServeReplica:"):
        return title.rsplit(":", 1)[-1]
    if title.startswith("ray::ProxyActor"):
        return "proxy"
    if title.startswith("ray::ServeController"):
        return "controller"
    text = " ".join(cmdline)
    if "multiprocessing" in text or "loadtests.monolith" in text:
        return "monolith worker" if "multiprocessing" in text else "monolith supervisor"
    return "ray other"


def cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each role among this process's descendants."""
    import psutil

    seconds: dict[str, float] = {}
    for process in psutil.Process().children(recursive=True):
        try:
            times = process.cpu_times()
            role = role_of(process.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        seconds[role] = seconds.get(role, 0.0) + times.user + times.system
    return seconds


def children_cpu() -> float:
    """CPU seconds of this process's finished and waited-for children (how Locust's own cost is read)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
