"""What the scaling benchmark measures, started through the shared harness (`loadtests.harness`) and always
stopped: the Ray Serve application in a given replica layout, and the monolith baseline under uvicorn. Also where
each process's CPU time goes."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from loadtests.harness import READY_TIMEOUT_S, free_port, profile, served_application, service_process, wait_until

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENTS = ("Ingress", "BodyPart", "JointDetection", "RatingenScore")
__all__ = ["DEPLOYMENTS", "Layout", "monolith", "ray_application"]


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
        # Deployments beyond the four (the chest-findings model) keep the base's replicas and shrink alike.
        counts = dict(zip(DEPLOYMENTS, self.replicas, strict=True))
        counts |= {name: int(options.get("num_replicas", 1)) for name, options in base.items() if name not in counts}
        shares = {name: float(base[name].get("ray_actor_options", {}).get("num_cpus", 1.0)) for name in counts}
        total = sum(n * shares[name] for name, n in counts.items())
        scale = min(1.0, cpus / total)
        profile = {}
        for name, n in counts.items():
            options = {**base[name], **(overrides or {}).get(name, {}), "num_replicas": n}
            actor = dict(options.get("ray_actor_options", {}))
            # Rounded down: a sum a hair over `cpus` would leave a replica that Ray can never place.
            actor["num_cpus"] = math.floor(shares[name] * scale * 1000) / 1000
            options["ray_actor_options"] = actor
            profile[name] = options
        return profile


@contextlib.contextmanager
def ray_application(
    layout: Layout, cpus: int, args_overrides: dict | None = None, deployment_overrides: dict | None = None
) -> Iterator[str]:
    """The application in `layout` on a Ray started here with `cpus` CPUs, on a free port; Serve and Ray shut
    down after. `args_overrides` replace `args:` of serve_config.yaml, `deployment_overrides` (by deployment
    name) its deployments' options, e.g. queue limits."""
    settings, base = profile(overrides=args_overrides)
    with served_application(settings, layout.profile(base, cpus, deployment_overrides), cpus=cpus) as url:
        yield url


@contextlib.contextmanager
def monolith(workers: int, cores: int, app_args: dict | None = None, log_dir: Path | None = None) -> Iterator[str]:
    """The monolith under uvicorn with `workers` processes on a free port, ready (every worker loaded its models);
    stopped after by terminating its process group. Its settings are serve_config.yaml's `args:` with `app_args`
    over them, as the served application's, passed the way `Settings` reads them (`DEEPXRAY_<NAME>`). Its output
    goes to `monolith-PORT.log` in `log_dir`, or in a temporary folder removed after."""
    from deepxray.settings import ENV_PREFIX
    from loadtests.monolith import READY_LINE

    settings, _ = profile(overrides=app_args)
    env = {ENV_PREFIX + name.upper(): str(value) for name, value in settings.model_dump(exclude_unset=True).items()}
    port = free_port()
    command = [sys.executable, "-m", "loadtests.monolith", "--workers", str(workers), "--cores", str(cores)]
    command += ["--port", str(port)]
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    with contextlib.ExitStack() as stack:
        folder = Path(log_dir) if log_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / f"monolith-{port}.log"

        def log_tail() -> str:
            return log_path.read_text(encoding="utf-8", errors="replace")[-2000:] if log_path.exists() else ""

        def all_workers_ready() -> bool:
            # /readyz answers as soon as one worker is up; the others take a few seconds more.
            if process.poll() is not None:
                raise RuntimeError(f"the monolith exited with {process.returncode}")
            return log_path.read_text(encoding="utf-8", errors="replace").count(READY_LINE) >= workers

        try:
            process = stack.enter_context(service_process(command, port, cwd=ROOT, env=full_env, log=log_path))
            wait_until(all_workers_ready, READY_TIMEOUT_S, f"all {workers} monolith workers ready")
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error}; the monolith's output:\n{log_tail()}") from error
        yield f"http://127.0.0.1:{port}"


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
