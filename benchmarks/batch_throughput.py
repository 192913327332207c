"""Throughput of `deepxray score` on a registry: films per second of each engine, and where the CPU goes.

Renders `--films` full-size (2048 x 2560) left-hand phantoms with `deepxray phantoms generate` (16-bit PNG, and
the same hands as JPEG; into a temporary folder, or `--keep`, where a later run with the same figures reuses
them), then scores the same films, in one run, with each engine:

- `loop`: one process, one film after another: read the file, `deepxray.pipeline.answer_or_refusal` (the
  `/score` contract around `score_radiograph`) with the three models in-process (`local_models`, TensorFlow
  threads = all cores), the film's rows appended to a CSV;
- `ray`: `deepxray score DIR --out OUT.csv` with its default engine, Ray Data on a Ray of its own
  (`--workers`, `--batch-size` passed on when given);
- `http`: `deepxray score DIR --out OUT.csv --url URL --concurrency C` against the one-machine profile
  (serve_config.yaml, `loadtests.harness.served_application`) started here on a free port, warmed by two
  requests first;
- `cluster`: Ray Data as `ray`, with `--address` of a cluster of three nodes on this machine, each its own
  `ray start` (tests/local_ray_cluster.py, as the cluster tests start it): a head without CPUs and two workers
  of `--cluster-worker-cpus` logical CPUs each (default: half this machine's cores, so the cluster has as many
  CPUs as the machine).

Every engine runs as its own process (the loop as `python -m benchmarks.batch_throughput score-loop ...`, the
others as the `deepxray` command), so each is timed the same way:

- films/s end to end: the films over the time from starting the process to its exit (Python's start, Ray's
  start, loading the models and shutting down included; for `http` the service is already running);
- first film: seconds from the start until the first film's rows are in the output;
- films/s steady: the films written after the first ones over the time from then until the last;
- CPU seconds per film of each kind of process under this one (psutil's cpu_times, sampled every 0.25 s; a
  process's time before the run left out): the engine's process (`driver`), Ray Data's actors (`data
  workers`), Serve's replicas by deployment, `proxy`, `controller`, `raylet+gcs`, and the rest of Ray (`ray
  other`: idle workers, agents, dashboard, `ray start`); "cores busy" is all of it over the wall time. This
  process itself (the watching, and the Ray driver of the service it starts) is not counted: "(watch)".

Every engine's output must hold one scored row per film (left hands, one hand each); a difference is printed as
an error, and the exit code is 1; how many films each engine scored as the loop did is printed too. Then, per
format, the ratios and the issue's goals: Ray Data at least 1.6 times the loop's films/s and 1.3 times the HTTP
engine's, judged end to end (the steady ratio alongside).

Every service, Ray and cluster started here is stopped afterwards, whatever happens; a process one of them left
behind is ended by its id. The figures are this machine's: run it when nothing else does (it warns when another
Ray is running). With 300 films, both formats and all four engines, about 9 minutes on 2 cores (1.5 of them
rendering the films).

    python -m benchmarks.batch_throughput --films 300
    python -m benchmarks.batch_throughput --films 40 --formats png --engines loop,ray --workers 2 --batch-size 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import importlib.util
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil

from loadtests import harness
from loadtests.service import DEPLOYMENTS, role_of

ROOT = Path(__file__).resolve().parents[1]
DEEPXRAY = str(Path(sys.executable).parent / "deepxray")
LOOP_COMMAND = "score-loop"
ENGINES = {
    "loop": "(a) loop, one process",
    "ray": "(b) Ray Data",
    "http": "(c) --url, one-machine profile",
    "cluster": "(d) Ray Data, 3-node cluster",
}
FORMATS = {"png": "16-bit PNG", "jpeg": "JPEG"}
GOALS = {"loop": 1.6, "http": 1.3}  # Ray Data's films/s at least this many times the engine's
DATA_WORKERS = "data workers"
KINDS = ("driver", DATA_WORKERS, *DEPLOYMENTS, "proxy", "controller", "raylet+gcs", "ray other")
SAMPLE_S = 0.25
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# -------------------------------------------------------------------------------------------- (a) the loop


def score_loop(folder: Path, out: Path, models_dir: Path) -> None:
    """The plain loop: every film of `folder`, one after another, in this process; its rows appended to `out`."""
    from deepxray.batch.inputs import collect_films, image_id
    from deepxray.batch.output import Output
    from deepxray.batch.rows import film_rows
    from deepxray.models.runtime import local_models
    from deepxray.pipeline import answer_or_refusal
    from deepxray.settings import Settings

    settings = Settings()
    models = local_models(models_dir)  # TensorFlow threads: all cores
    output = Output(out, overwrite=True)

    async def every_film() -> None:
        for film in collect_films([folder]):
            start = time.perf_counter()
            data = Path(film.source).read_bytes()
            status, body = await answer_or_refusal(data, models, settings)
            output.append(film_rows(film, image_id(data), status, body, time.perf_counter() - start))

    try:
        asyncio.run(every_film())
    finally:
        output.close()


def loop_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.batch_throughput {LOOP_COMMAND}")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True)
    args = parser.parse_args(argv)
    score_loop(args.folder, args.out, args.models)


# ------------------------------------------------------------------------------------ watching one engine


def kind_of(cmdline: list[str], pid: int, driver: int | None) -> str:
    """Which kind of process a process under this one is (see KINDS)."""
    if pid == driver:
        return "driver"
    title = cmdline[0] if cmdline else ""
    if title.startswith("ray::MapWorker"):
        return DATA_WORKERS
    if Path(title.split(" ")[0]).name in ("raylet", "gcs_server"):
        return "raylet+gcs"
    role = role_of(cmdline)  # Serve's replicas by deployment, its proxy and controller, or the rest
    return role if role in KINDS else "ray other"


def films_in(raw: bytes) -> int:
    """Films whose rows are in a CSV output so far (its complete lines)."""
    lines = raw[: raw.rfind(b"\n") + 1].decode("utf-8", errors="replace").splitlines()
    return len({row["source"] for row in csv.DictReader(lines)})


class Watch:
    """While an engine runs: the CPU seconds of every process under this one, sampled every SAMPLE_S (what a
    process had used before the watch began is left out; one that ends counts up to its last sample), and the
    moments the output gained films. Every process seen is kept in `seen`, to end any that outlive their Ray."""

    def __init__(self, out: Path, seen: dict[tuple[int, float], psutil.Process]):
        self.out, self.seen = out, seen
        self.driver: int | None = None
        self.used: dict[tuple[int, float], list] = {}  # process: [CPU at the start, CPU last seen, kind]
        self.progress: list[tuple[float, int]] = []
        self._size = 0
        self._stop = threading.Event()
        self._sample(before=True)
        self._own = self._own_cpu()
        self.start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="batch-throughput-watch", daemon=True)
        self._thread.start()

    def _sample(self, before: bool = False) -> None:
        for process in psutil.Process().children(recursive=True):
            try:
                with process.oneshot():
                    key = (process.pid, process.create_time())
                    times = process.cpu_times()
                    kind = kind_of(process.cmdline(), process.pid, self.driver)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            cpu = times.user + times.system
            self.seen.setdefault(key, process)
            entry = self.used.setdefault(key, [cpu if before else 0.0, cpu, kind])
            entry[1:] = [cpu, kind]
        with contextlib.suppress(OSError):
            if not before and self.out.stat().st_size != self._size:
                raw = self.out.read_bytes()
                films, self._size = films_in(raw), len(raw)
                if films and (not self.progress or films != self.progress[-1][1]):
                    self.progress.append((time.perf_counter(), films))

    @staticmethod
    def _own_cpu() -> float:
        times = psutil.Process().cpu_times()
        return times.user + times.system

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def stop(self) -> dict[str, float]:
        """The last sample; CPU seconds used during the watch by kind. `own_cpu_s`: this process's meanwhile
        (the watching itself, mostly), which is not counted."""
        self._stop.set()
        self._thread.join()
        self._sample()
        self.own_cpu_s = self._own_cpu() - self._own
        cpu: dict[str, float] = {}
        for first, last, kind in self.used.values():
            cpu[kind] = cpu.get(kind, 0.0) + max(0.0, last - first)
        return cpu


def end_leftovers(seen: dict[tuple[int, float], psutil.Process], keep_descendants: bool = True) -> int:
    """Ends the processes seen during a run that still run but are no longer under this process (a Ray that
    outlived its driver), or, with `keep_descendants` False, every one still running; returns how many."""
    mine = {p.pid for p in psutil.Process().children(recursive=True)} if keep_descendants else set()
    left = [p for p in seen.values() if p.pid not in mine and p.is_running()]
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(left, timeout=10)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    return len(left)


def others_running_ray() -> list[int]:
    """Raylets on this machine that are not under this process (another Ray: its work would share the cores)."""
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    found = []
    for process in psutil.process_iter(["name", "pid"]):
        if process.info["name"] == "raylet" and process.info["pid"] not in mine:
            found.append(process.info["pid"])
    return found


# ---------------------------------------------------------------------------------------------- one run


@dataclass
class Result:
    engine: str
    fmt: str
    films: int
    wall_s: float = 0.0
    first_s: float | None = None
    steady: float | None = None  # films/s from the first films written to the last
    statuses: dict[str, int] = field(default_factory=dict)  # rows by status
    scored_films: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds of the run by kind
    watch_cpu_s: float = 0.0  # this process's meanwhile (watching), not counted in cpu_s
    scores: dict[str, list] = field(default_factory=dict, repr=False)  # image id -> the scored hand's grades
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.films / self.wall_s if self.wall_s and not self.error else 0.0

    def problems(self) -> list[str]:
        if self.error:
            return [self.error]
        scored = self.statuses.get("scored", 0)
        if scored != self.films or self.scored_films != self.films:
            rows = ", ".join(f"{status} {n}" for status, n in sorted(self.statuses.items()))
            return [f"{scored} scored rows ({self.scored_films} films) for {self.films} films; rows: {rows or 'none'}"]
        return []


def read_output(result: Result, out: Path) -> None:
    from deepxray.labels import JOINT_NAMES

    with contextlib.suppress(OSError), out.open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
        result.statuses = dict(Counter(row["status"] for row in rows))
        scored = [row for row in rows if row["status"] == "scored"]
        result.scored_films = len({row["image_id"] for row in scored})
        result.scores = {row["image_id"]: [row[name] for name in JOINT_NAMES] for row in scored}


def subprocess_env(scratch: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for an engine or a node: a scratch TMPDIR, this checkout importable, no
    RAY_ADDRESS (every engine says which Ray it uses), no usage reports; `extra` over it."""
    env = {**os.environ, **harness.scratch_env(scratch), "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return {**env, **(extra or {})}


def run_engine(
    engine: str,
    fmt: str,
    command: tuple[list[str], dict],
    folder: Path,
    films: int,
    work: Path,
    timeout_s: float,
    seen: dict,
) -> Result:
    """`command FOLDER --out OUT` (with its environment variables) as a process of its own, watched (see the
    module's docstring)."""
    result = Result(engine, fmt, films)
    out, log = work / f"{engine}-{fmt}.csv", work / f"{engine}-{fmt}.log"
    out.unlink(missing_ok=True)
    words, variables = [*command[0], str(folder), "--out", str(out)], command[1]
    with harness.scratch_dir() as scratch, log.open("w", encoding="utf-8") as log_file:
        watch = Watch(out, seen)
        process = subprocess.Popen(
            words,
            cwd=ROOT,
            env=subprocess_env(scratch, variables),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        watch.driver = process.pid
        try:
            code = process.wait(timeout=timeout_s)
            result.wall_s = time.perf_counter() - watch.start
            if code != 0:
                result.error = f"exited with {code}; the end of its output:\n{log.read_text()[-3000:]}"
        except subprocess.TimeoutExpired:
            result.error = f"still running after {timeout_s:g} s: stopped"
        finally:
            if process.poll() is None:
                harness.stop_process_group(process, timeout_s=20)
            result.cpu_s = watch.stop()
            result.watch_cpu_s = watch.own_cpu_s
            end_leftovers(seen)
    if watch.progress:
        (first, done), (last, total) = watch.progress[0], watch.progress[-1]
        result.first_s = first - watch.start
        result.steady = (total - done) / (last - first) if last > first else None
    read_output(result, out)
    return result


# -------------------------------------------------------------------------------- what each engine needs


@contextlib.contextmanager
def local_cluster(worker_cpus: int) -> Iterator[tuple[str, dict[str, str]]]:
    """A head without CPUs and two workers of `worker_cpus` logical CPUs, each its own `ray start` process
    (tests/local_ray_cluster.py), all registered, with a token of its own (Ray's token authentication, as the
    cluster tests and cluster.yaml run it); yields the head's address and the variables a driver needs. Stopped
    after, node by node."""
    spec = importlib.util.spec_from_file_location("local_ray_cluster", ROOT / "tests" / "local_ray_cluster.py")
    module = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    root = Path(tempfile.mkdtemp(prefix="dxb-", dir="/tmp"))  # short: Ray's socket paths live under it
    scratch = root / "tmp"
    scratch.mkdir()
    token = secrets.token_hex(32)
    (root / "auth_token").write_text(token)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(root / "auth_token")}
    env = subprocess_env(scratch, auth)
    env.pop("RAY_AUTH_TOKEN", None)  # would win over the token file
    cluster = module.LocalCluster(root, env)
    try:
        cluster.start_head(num_cpus=0)
        for name in ("worker1", "worker2"):
            cluster.add_worker(name, worker_cpus)

        def all_alive() -> bool:  # Ray's state API, asked through the head's dashboard
            answer = httpx.get(f"{cluster.dashboard}/api/v0/nodes", headers={"Authorization": f"Bearer {token}"})
            nodes = answer.json()["data"]["result"]["result"] if answer.status_code == 200 else []
            return sum(node["state"] == "ALIVE" for node in nodes) == 3

        harness.wait_until(all_alive, module.START_TIMEOUT_S, "the three nodes of the local cluster", 1.0)
        yield f"127.0.0.1:{cluster.gcs_port}", auth
    finally:
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def one_machine_service(models_dir: Path, sample: Path) -> Iterator[str]:
    """The one-machine profile with these models on a free port, warmed by two requests; yields its URL."""
    settings, deployments = harness.profile(overrides={"models_dir": str(models_dir)})
    with harness.served_application(settings, deployments, cpus=os.cpu_count() or 2) as url:
        harness.time_image(url, sample.read_bytes(), runs=0, warmup=2, filename=sample.name)
        yield url


@contextlib.contextmanager
def engine_command(engine: str, args: argparse.Namespace, sample: Path) -> Iterator[tuple[list[str], dict]]:
    """The command that scores a folder with `engine` (the folder and `--out OUT` follow) and the environment
    variables it needs, with what it needs started for as long as the context lasts."""
    score = [DEEPXRAY, "score", "--quiet", "--overwrite"]
    data = ["--models", str(args.models)]
    data += ["--workers", str(args.workers)] if args.workers else []
    data += ["--batch-size", str(args.batch_size)] if args.batch_size else []
    if engine == "loop":
        yield [sys.executable, "-m", "benchmarks.batch_throughput", LOOP_COMMAND, "--models", str(args.models)], {}
    elif engine == "ray":
        yield [*score, *data], {}
    elif engine == "http":
        with one_machine_service(args.models, sample) as url:
            yield [*score, "--url", url, "--concurrency", str(args.concurrency)], {}
    else:
        with local_cluster(args.cluster_worker_cpus) as (address, auth):
            yield [*score, *data, "--address", address], auth


def phantoms(folder: Path, fmt: str, films: int, seed: int) -> Path:
    """`films` left hands of `seed` in `fmt` under `folder`, rendered unless an earlier run left the same there."""
    target = folder / fmt
    marker = target / "batch_throughput.json"
    wanted = {"films": films, "seed": seed, "format": fmt}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        print(f"reusing {films} {fmt} films in {target}", flush=True)
        return target
    shutil.rmtree(target, ignore_errors=True)
    start = time.perf_counter()
    command = [DEEPXRAY, "phantoms", "generate", "--n", str(films), "--out", str(target), "--seed", str(seed)]
    subprocess.run([*command, "--format", fmt], check=True, cwd=ROOT, capture_output=True)
    marker.write_text(json.dumps(wanted))
    print(f"rendered {films} {fmt} films in {time.perf_counter() - start:.0f} s into {target}", flush=True)
    return target


# ------------------------------------------------------------------------------------------------ report


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def ratio(a: Result | None, b: Result | None, steady: bool = False) -> float | None:
    if a is None or b is None or a.error or b.error:
        return None
    x, y = (a.steady, b.steady) if steady else (a.rate, b.rate)
    return x / y if x and y else None


def report(fmt: str, results: dict[str, Result], folder: Path) -> list[str]:
    """Prints the format's tables; returns its goal lines."""
    sizes = [p.stat().st_size for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES]
    films = next(iter(results.values())).films
    print(
        f"\n{FORMATS[fmt]}: {films} films (2048x2560 left hands, {sum(sizes) / max(1, len(sizes)) / 2**20:.1f} MiB "
        f"each on average), {os.cpu_count()} cores"
    )
    print(
        f"{'engine':32s} {'wall s':>7s} {'films/s':>8s} {'first film s':>13s} {'steady films/s':>15s} "
        f"{'scored rows':>12s} {'cores busy':>11s}"
    )
    for engine, r in results.items():
        busy = sum(r.cpu_s.values()) / r.wall_s if r.wall_s else None
        print(
            f"{ENGINES[engine]:32s} {_f(r.wall_s, 1):>7s} {_f(r.rate):>8s} {_f(r.first_s, 1):>13s} "
            f"{_f(r.steady):>15s} {r.statuses.get('scored', 0):>12d} {_f(busy):>11s}"
        )
    kinds = [kind for kind in KINDS if any(r.cpu_s.get(kind, 0.0) > 0.0005 * r.films for r in results.values())]
    print("\nCPU seconds per film by process kind during the run (start-up included)")
    print(
        f"{'engine':32s} "
        + " ".join(f"{kind:>{max(6, len(kind))}s}" for kind in kinds)
        + f" {'all':>6s} {'(watch)':>7s}"
    )
    for engine, r in results.items():
        cells = [f"{r.cpu_s.get(kind, 0.0) / r.films:>{max(6, len(kind))}.3f}" for kind in kinds]
        print(
            f"{ENGINES[engine]:32s} "
            + " ".join(cells)
            + f" {sum(r.cpu_s.values()) / r.films:6.3f} {r.watch_cpu_s / r.films:7.3f}"
        )
    base = results.get("loop")
    others = [r for engine, r in results.items() if engine != "loop" and not r.error]
    if base is not None and not base.error and others:
        for r in others:
            same = [image for image, grades in base.scores.items() if r.scores.get(image) == grades]
            print(f"{r.engine}: the loop's scores on {len(same)} of {films} films")
    goals, ray = [], results.get("ray")
    for other, goal in GOALS.items():
        if ray is None or other not in results:
            continue
        end, steady = ratio(ray, results[other]), ratio(ray, results[other], steady=True)
        print(f"Ray Data / {other}: {_x(end)} end to end, {_x(steady)} steady")
        verdict = "n/a" if end is None else "met" if end >= goal else "NOT MET"
        goals.append(
            f"{FORMATS[fmt]:10s} Ray Data >= {goal}x {other:4s} films/s: {_x(end)} end to end "
            f"(steady {_x(steady)}): {verdict}"
        )
    return goals


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=300, help="full-size left hands per format (default 300)")
    parser.add_argument("--formats", default="png,jpeg", help="comma list of png, jpeg (default png,jpeg)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma list of loop, ray, http, cluster")
    parser.add_argument("--workers", type=int, default=None, help="Ray Data actors (default: the command's)")
    parser.add_argument("--batch-size", type=int, default=None, help="films per actor call (default: the command's)")
    parser.add_argument("--concurrency", type=int, default=4, help="films in flight to the service (default 4)")
    parser.add_argument(
        "--cluster-worker-cpus",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="logical CPUs of each of the cluster's two worker nodes (default: half the cores)",
    )
    parser.add_argument("--seed", type=int, default=1500, help="phantom seed (default 1500)")
    parser.add_argument(
        "--models", type=Path, default=None, help="model folder (default: DEEPXRAY_MODELS_DIR, shipped)"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep films, outputs and logs in this folder (default: a temporary one, removed)",
    )
    parser.add_argument("--timeout", type=float, default=1200, help="longest run of one engine, s (default 1200)")
    args = parser.parse_args(argv)
    args.format_list = [f.strip() for f in args.formats.split(",") if f.strip()]
    args.engine_list = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted({*args.format_list} - {*FORMATS}) + sorted({*args.engine_list} - {*ENGINES})
    if unknown or not args.format_list or not args.engine_list:
        parser.error(f"unknown or no formats or engines: {', '.join(unknown) or 'none given'}")
    args.models = (args.models or harness.models_dir()).resolve()
    if not harness.models_present(args.models):
        parser.error(f"no model artifacts in {args.models}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [LOOP_COMMAND]:
        loop_main(argv[1:])
        return 0
    args = parse_options(argv)
    import ray

    print(f"python -m benchmarks.batch_throughput {shlex.join(argv)}")
    print(
        f"{os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, Ray {ray.__version__}, "
        f"models {args.models}"
    )
    if others := others_running_ray():
        print(f"WARNING: another Ray runs on this machine (raylets {others}): the figures share the cores with it")
    seen: dict[tuple[int, float], psutil.Process] = {}
    results: dict[str, dict[str, Result]] = {fmt: {} for fmt in args.format_list}
    with contextlib.ExitStack() as stack:
        work = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deepxray-batch-")))
        work.mkdir(parents=True, exist_ok=True)
        stack.callback(lambda: end_leftovers(seen, keep_descendants=False))
        folders = {fmt: phantoms(work / "films", fmt, args.films, args.seed) for fmt in args.format_list}
        for engine in args.engine_list:
            sample = next(p for p in sorted(folders[args.format_list[0]].iterdir()) if p.suffix in IMAGE_SUFFIXES)
            with engine_command(engine, args, sample) as command:
                for fmt, folder in folders.items():
                    result = run_engine(engine, fmt, command, folder, args.films, work, args.timeout, seen)
                    results[fmt][engine] = result
                    print(
                        f"{engine} {fmt}: {_f(result.rate)} films/s end to end, {_f(result.steady)} steady; "
                        f"{result.statuses}",
                        flush=True,
                    )
                    for problem in result.problems():
                        print(f"ERROR !!! {engine} {fmt}: {problem}", flush=True)
        goals = [line for fmt, by_engine in results.items() for line in report(fmt, by_engine, folders[fmt])]
        if args.keep:
            rows = [asdict(r) for by_engine in results.values() for r in by_engine.values()]
            (work / "batch_throughput.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    print("\ngoals (films/s from starting the command to its exit):")
    for line in goals:
        print(f"  {line}")
    problems = [f"{r.engine} {r.fmt}: {p}" for by in results.values() for r in by.values() for p in r.problems()]
    for problem in problems:
        print(f"ERROR !!! {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
