"""The load tests themselves: answer checks, scenarios, the summary, and short Locust runs end to end.

Unit tests need nothing running. The `serve` tests run Locust for a few seconds at low load: against a fake
service whose every answer is wrong (each must count as a failure), against the real application on Ray Serve
(the one-machine profile; no failures, a hand scored and a non-hand refused), and against the monolith baseline.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deepxray.labels import JOINT_NAMES, RESEARCH_NOTICE
from deepxray.models.registry import MODEL_NAMES
from loadtests.checks import Expected, classify
from loadtests.harness import PortTaken, claim_port, free_port, models_present, percentile, port_in_use
from loadtests.pool import ensure_pool, load_pool, parse_groups
from loadtests.run import LoadRun, parse_duration, run_load
from loadtests.service import Layout
from loadtests.shapes import users_at
from loadtests.summary import Request, summarise

LEFT = Expected("left_hand", "L")
CHEST = Expected("chest", None)
ROOT = Path(__file__).resolve().parents[1]
LOAD_SECONDS = 6


def answer(scores=None, laterality="L") -> dict:
    """A whole `/score` answer as the API gives it (`deepxray.api.schemas.ScoreAnswer`)."""
    scores = scores if scores is not None else {name: i % 6 for i, name in enumerate(JOINT_NAMES)}
    joint = {"probabilities": [1 / 6] * 6, "center": [100.0, 200.0], "box": [50.0, 150.0, 150.0, 250.0]}
    joints = {name: {**joint, "score": min(score, 5), "confidence": 0.9} for name, score in scores.items()}
    hand = {"laterality": laterality, "scores": scores, "total": sum(scores.values()), "joints": joints}
    return {
        "scores": scores,
        "total": sum(scores.values()),
        "body_part": {"label": "left_hand" if laterality == "L" else "right_hand", "probability": 0.98},
        "laterality": laterality,
        "joints": joints,
        "hands": [{**hand, "box": [40.0, 140.0, 160.0, 260.0], "confidence": 0.9}],
        "hands_not_scored": [],
        "orientation": {"rotated_deg": 0},
        "warnings": [],
        "models": {name: f"{name}@1.0.0" for name in MODEL_NAMES},
        "request_id": "req-1",
        "notice": RESEARCH_NOTICE,
    }


def refusal(error: str = "not_a_hand") -> bytes:
    """A 422 body as the API gives it (`deepxray.api.schemas.ErrorAnswer`)."""
    body = {"error": error, "detail": "The image is not a hand radiograph.", "request_id": "req-2"}
    if error == "not_a_hand":
        body["body_part"] = {"label": "chest", "probability": 0.97}
    return json.dumps(body).encode()


# ------------------------------------------------------------------------------------------- answer checks


def test_a_right_score_and_a_right_refusal_are_answers():
    assert classify(200, answer(), LEFT)[0] == "ok"
    assert classify(200, answer(laterality="R"), Expected("right_hand", "R"))[0] == "ok"
    assert classify(422, refusal(), CHEST)[0] == "refused"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, answer({**answer()["scores"], "pip5": 6}), LEFT),  # a score outside 0..5
        (200, answer({name: 1 for name in JOINT_NAMES[:9]}), LEFT),  # nine joints
        (200, {**answer(), "total": 99}, LEFT),  # a total that is not the sum
        (200, answer(laterality="R"), LEFT),  # the wrong hand
        (200, b"<html>not json</html>", LEFT),
        (200, answer(), CHEST),  # a chest scored
        (422, refusal("joints_not_found"), LEFT),  # a hand refused
        (422, refusal("joints_not_found"), CHEST),  # refused, but not as a non-hand
        (200, {name: value for name, value in answer().items() if name != "joints"}, LEFT),  # not the API's answer
        (200, {**answer(), "total": True}, LEFT),  # a bool for a number
        (422, b'{"error": "not_a_hand", "detail": "chest"}', CHEST),  # not the API's error (no request_id)
    ],
)
def test_a_wrong_answer_is_a_wrong_answer(status, body, expected):
    assert classify(status, body, expected)[0] == "wrong_answer"


def test_other_outcomes_by_kind():
    assert classify(503, b"", LEFT)[0] == "overloaded"
    assert classify(500, b"{}", LEFT)[0] == "http_500"
    assert classify(504, b"{}", CHEST)[0] == "http_504"
    assert classify(0, None, LEFT)[0] == "connection_error"


# ---------------------------------------------------------------------------------------------- scenarios


def test_shapes():
    assert [users_at("steady", t, 4, 60) for t in (0, 30, 59.9, 60)] == [4, 4, 4, None]
    ramp = [users_at("ramp", t, 8, 100) for t in range(0, 100, 5)]
    assert ramp[0] == 1 and ramp[-1] == 8 and ramp == sorted(ramp)
    assert [users_at("spike", t, 4, 90) for t in (0, 29, 30, 59, 60, 89, 90)] == [4, 4, 12, 12, 4, 4, None]
    with pytest.raises(ValueError):
        users_at("wave", 0, 1, 10)


def test_layouts_fit_the_cpus(one_machine_profile):
    _, base = one_machine_profile
    shipped = Layout.parse("1-1-1-1").profile(base, 2)
    assert all(shipped[name]["ray_actor_options"]["num_cpus"] == base[name]["ray_actor_options"]["num_cpus"]
               for name in base)  # fmt: skip
    wide = Layout.parse("3-1-2-2").profile(base, 2, {"Ingress": {"max_queued_requests": 4}})
    assert wide["Ingress"]["num_replicas"] == 3 and wide["JointDetection"]["num_replicas"] == 2
    assert wide["Ingress"]["max_queued_requests"] == 4
    assert wide["Ingress"]["max_ongoing_requests"] == base["Ingress"]["max_ongoing_requests"]
    reserved = sum(o["num_replicas"] * o["ray_actor_options"]["num_cpus"] for o in wide.values())
    assert 1.9 < reserved <= 2.0
    assert (
        sum(
            o["num_replicas"] * o["ray_actor_options"]["num_cpus"]
            for o in Layout.parse("2-1-1-1").profile(base, 2).values()
        )
        <= 2
    )
    assert wide["RatingenScore"]["user_config"] == base["RatingenScore"]["user_config"]
    for bad in ("1-1-1", "0-1-1-1", "a-1-1-1"):
        with pytest.raises(ValueError):
            Layout.parse(bad)


def test_arguments():
    assert parse_duration("90s") == 90 and parse_duration("2m") == 120 and parse_duration("15") == 15
    assert parse_duration("1m30s") == 90
    for bad in ("", "0", "1x", "s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_groups("all") == ("png", "jpeg", "dicom", "others") and parse_groups("png") == ("png",)
    with pytest.raises(ValueError):
        parse_groups("gif")
    from loadtests.scaling import parse_app_args, parse_options

    options = parse_options(["--layouts", "1-1-1-1,2-1-2-1", "--duration", "20s", "--arg", "max_waiting=4", "--spike"])
    assert [layout.name for layout in options.layout_list] == ["1-1-1-1", "2-1-2-1"]
    assert options.duration_s == 20 and options.spike_duration_s == 90 and options.app_args == {"max_waiting": "4"}
    defaults = parse_options([])
    assert defaults.users == 4 and defaults.monolith and len(defaults.layout_list) == 4

    assert parse_app_args(["max_waiting=4", " max_scoring = 2"]) == {"max_waiting": "4", "max_scoring": "2"}
    with pytest.raises(ValueError):
        parse_app_args(["max_waiting"])


def test_the_drivers_do_not_import_locust():
    """Locust runs in its own process: importing it would monkey-patch the benchmark's Ray driver with gevent."""
    code = (
        "import sys, loadtests.run, loadtests.scaling, loadtests.service, loadtests.monolith;"
        "loadtests.run.parse_duration('1m'); assert 'gevent' not in sys.modules, 'gevent imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# ----------------------------------------------------------------------------- the harness: ports, timing


def test_a_taken_port_is_refused_and_none_picks_a_free_one(held_port):
    assert port_in_use(held_port)
    with pytest.raises(PortTaken, match=f"port {held_port} on 127.0.0.1 is taken"):
        claim_port(held_port)
    picked = claim_port(None)
    assert picked != held_port and not port_in_use(picked)
    assert claim_port(picked) == picked


def test_the_application_is_not_started_on_a_taken_port(held_port, one_machine_profile):
    import ray

    from loadtests.harness import served_application, service_process

    settings, deployments = one_machine_profile
    with pytest.raises(PortTaken), served_application(settings, deployments, port=held_port):
        pass
    assert not ray.is_initialized()  # refused before Ray started
    with pytest.raises(PortTaken), service_process([sys.executable, "-c", "import time; time.sleep(60)"], held_port):
        pass


def test_a_port_shared_with_a_process_not_started_here_is_refused():
    """Two Ray Serve proxies bind one port (SO_REUSEPORT) and share its connections: once our service is up,
    another listener on its port means our figures would be partly someone else's."""
    from loadtests.harness import refuse_shared_port

    port = free_port()
    code = (
        "import os, socket, time\n"
        "if os.fork():\n    os._exit(0)\n"  # the listener is no descendant of the test's process
        "s = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)\n"
        f"s.bind(('127.0.0.1', {port}))\ns.listen()\nprint(os.getpid(), flush=True)\ntime.sleep(60)\n"
    )
    starter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    other = int(starter.stdout.readline())
    starter.wait(timeout=30)
    try:
        with socket.socket() as ours:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            ours.bind(("127.0.0.1", port))
            ours.listen()
            with pytest.raises(PortTaken, match=f"port {port} is also served by another process \\({other} "):
                refuse_shared_port(port)
        refuse_shared_port(free_port())  # nobody else there: no complaint
    finally:
        os.kill(other, signal.SIGKILL)


def test_a_benchmark_refuses_a_taken_port_in_one_line(held_port):
    """As when `serve run` holds 8000: the benchmark must not time that service as if it were its own."""
    command = [sys.executable, "-m", "benchmarks.serve_latency", "--port", str(held_port), "--runs", "1"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"serve_latency: port {held_port} on 127.0.0.1 is taken by another service; stop it or choose another "
        "port (without a port a free one is picked)"
    ]


def test_percentiles_are_nearest_rank_and_timing_keeps_the_first_failure():
    values = [0.1 * i for i in range(20, 0, -1)]
    ordered = sorted(values)
    assert percentile(values, 50) == ordered[9] and percentile(values, 95) == ordered[18]
    assert percentile(values, 100) == ordered[-1] and percentile(values, 0) == ordered[0]
    assert percentile([], 50) is None and percentile([3.0], 99) == 3.0
    from loadtests.harness import time_calls

    answers = iter(["404 not_found", "200", "503 overloaded", "200", "504 stage_timeout"])
    timing = time_calls(lambda: next(answers), runs=4, warmup=1)
    assert len(timing.times) == 4 and timing.outcome == "404 not_found"
    assert timing.p50 == percentile(timing.times, 50) and min(timing.times) <= timing.mean <= max(timing.times)


# ------------------------------------------------------------------------------------------------ summary


def requests_at(starts, latency=0.2, kind="ok", status=200) -> list[Request]:
    return [Request(t, latency, status, kind, "png") for t in starts]


def test_summary_counts_failures_by_kind_and_leaves_out_the_warm_up():
    requests = requests_at([i / 10 for i in range(100)])  # 10 answers a second for 10 s
    requests += requests_at([0.5], latency=3.0)  # slow, but in the warm-up
    requests += requests_at([5.0, 6.0], kind="wrong_answer")
    requests += requests_at([7.0], kind="connection_error", status=0)
    requests += requests_at([8.0], kind="overloaded", status=503)
    summary = summarise({"shape": "steady", "users": 2, "duration_s": 10}, requests, warmup_s=2)
    assert summary.answered == 80 and summary.images_per_s == pytest.approx(10.0)
    assert summary.p50_s == summary.p99_s == pytest.approx(0.2)
    assert summary.failures == {"connection_error": 1, "overloaded": 1, "wrong_answer": 2}
    assert summary.failed == 4 and summary.all_requests == 105


def test_spike_share_in_time_and_recovery():
    # 30 s: normal for 10 s, a spike with 503s and slow answers, then slow for 3 s more and normal again.
    requests = requests_at([i / 4 for i in range(40)], latency=0.2)
    requests += requests_at([10 + i / 4 for i in range(20)], latency=1.5)
    requests += requests_at([10 + i / 4 for i in range(20)], latency=0.01, kind="overloaded", status=503)
    requests += requests_at([15.5], latency=2.5)  # answered, but too late
    requests += requests_at([16.0], latency=0.3, kind="http_500", status=500)
    requests += requests_at([20 + i / 4 for i in range(12)], latency=0.9)
    requests += requests_at([23 + i / 4 for i in range(28)], latency=0.25)
    summary = summarise({"shape": "spike", "users": 2, "duration_s": 30}, requests, warmup_s=1)
    assert summary.spike_requests == 42
    assert summary.spike_answered_within_2s == pytest.approx(40 / 42)
    assert summary.recovery_s == 3.0
    assert summary.failures == {"http_500": 1}  # a 503 is an answer in the spike


def test_after_the_spike_normal_is_measured_against_the_latencies_before_it():
    # Before: medians of 0.2 s with a p95 of 0.6 s; after: 0.5 s, within the p95 though over 1.5 x the median.
    before = requests_at([i / 4 for i in range(40)], latency=0.2)
    before += requests_at([i + 0.1 for i in range(10)], latency=0.6)
    spike = requests_at([10 + i / 4 for i in range(40)], latency=1.0)
    after = requests_at([20 + i / 4 for i in range(40)], latency=0.5)
    summary = summarise({"shape": "spike", "users": 2, "duration_s": 30}, before + spike + after)
    assert summary.recovery_s == 0.0
    slower = requests_at([20 + i / 4 for i in range(40)], latency=0.7)
    assert summarise({"shape": "spike", "users": 2, "duration_s": 30}, before + spike + slower).recovery_s is None


def test_spike_that_never_recovers():
    requests = requests_at([i / 4 for i in range(40)]) + requests_at([10 + i / 4 for i in range(80)], latency=3.0)
    summary = summarise({"shape": "spike", "users": 2, "duration_s": 30}, requests)
    assert summary.recovery_s is None and summary.spike_answered_within_2s == 0.0


# ------------------------------------------------------------------------------------- Locust end to end


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Two hands in each format and one non-hand: every kind of upload, full size."""
    return ensure_pool(tmp_path_factory.mktemp("pool"), hands=2, others=1, seed=6100)


def test_pool_takes_the_groups_in_turn(pool):
    images = load_pool(pool)
    assert [image.group for image in images[:4]] == ["png", "jpeg", "dicom", "others"]
    assert {image.expected.body_part for image in images if image.group != "others"} == {"left_hand", "right_hand"}
    assert not images[3].expected.is_hand
    assert all(len(image.data) > 300_000 for image in images)  # full-size radiographs, not thumbnails


def short_run(url: str, groups: str = "all", users: int = 2) -> LoadRun:
    return LoadRun(url, users=users, duration_s=LOAD_SECONDS, groups=groups, warmup_s=0)


@pytest.fixture()
def wrong_service():
    """A service whose every answer is wrong: a score of 7 for every joint of every image."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/score")
    async def score():
        scores = {name: 7 for name in JOINT_NAMES}
        return {"scores": scores, "total": 70, "laterality": "L"}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_locust_without_a_pool_stops_at_once_in_one_sentence(tmp_path):
    """As a user runs it, before any pool was made: one sentence saying how to make one, no traceback, no request
    (the host is a port where nothing listens)."""
    locustfile = str(ROOT / "loadtests" / "locustfile.py")  # not imported here: Locust patches the process
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The default folder (relative: there is none in tmp_path) and a folder given.
    for extra in ([], ["--pool", str(tmp_path / "no-pool")]):
        command = [sys.executable, "-m", "locust", "-f", locustfile, "--headless", "-u", "1", "-r", "1", "-t", "5s",
                   "--host", f"http://127.0.0.1:{free_port()}", *extra]  # fmt: skip
        started = time.monotonic()
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode != 0 and "Traceback" not in result.stderr + result.stdout
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines[-1].startswith("locustfile: no phantom pool in ") and "python -m loadtests.pool" in lines[-1]
        assert "Aggregated" not in result.stdout + result.stderr  # no statistics: no user ever started
        assert time.monotonic() - started < 30


@pytest.mark.serve
def test_every_wrong_answer_is_a_locust_failure(wrong_service, pool, tmp_path):
    summary = run_load(short_run(wrong_service, users=1), tmp_path, pool, quiet=True)
    assert summary.requests > 0 and summary.answered == 0
    assert summary.failures == {"wrong_answer": summary.requests}
    with open(tmp_path / "locust_stats.csv", newline="", encoding="utf-8") as f:
        total = next(row for row in csv.DictReader(f) if row["Name"] == "Aggregated")
    assert int(total["Failure Count"]) == int(total["Request Count"]) > 0
    assert (tmp_path / "locust.html").stat().st_size > 0


def assert_clean_run(summary, pool) -> None:
    assert summary.failures == {}, summary.failures
    assert summary.kinds.get("ok", 0) >= 1 and summary.kinds.get("refused", 0) >= 1, summary.kinds
    assert summary.requests >= len(load_pool(pool)) // 2


@pytest.mark.serve
@pytest.mark.slow
def test_smoke_load_against_the_served_application(pool, tmp_path):
    """A few seconds of Locust at low load against the one-machine profile: no failures of any kind."""
    if not models_present():
        pytest.skip("no model artifacts: train them (deepxray train) or set DEEPXRAY_MODELS_DIR")
    from loadtests.service import ray_application

    with ray_application(Layout.parse("1-1-1-1"), cpus=2) as url:
        summary = run_load(short_run(url), tmp_path, pool, quiet=True)
    assert_clean_run(summary, pool)


@pytest.mark.serve
@pytest.mark.slow
def test_smoke_load_against_the_monolith(pool, tmp_path):
    if not models_present():
        pytest.skip("no model artifacts: train them (deepxray train) or set DEEPXRAY_MODELS_DIR")
    from loadtests.service import monolith

    with monolith(workers=1, cores=1) as url:
        summary = run_load(short_run(url, users=1), tmp_path, pool, quiet=True)
    assert_clean_run(summary, pool)


def test_scaling_table_compares_with_the_monolith():
    from loadtests.scaling import MONOLITH, Result, cpu_table, markdown_table

    def run(images_per_s, p95):
        return summarise(
            {"shape": "steady", "duration_s": 10},
            requests_at([i / images_per_s for i in range(int(10 * images_per_s))], latency=p95),
        )

    ours = Result("2-1-1-1", 0.2, 0.2, run(6, 0.5), run(12, 0.3), {"Ingress": 0.14, "proxy": 0.02})
    base = Result(MONOLITH, 0.3, 0.3, run(12, 0.25), run(20, 0.2), {"monolith worker": 0.12})
    rows = markdown_table([ours, base], cpus=2).splitlines()
    assert rows[2].split(" | ")[1:] == ["0.200", "6.00", "0.500", "12.00", "0.300", "0", "0.50", "2.00 |"]
    assert rows[3].startswith("| monolith (2 uvicorn workers) | 0.300 | 12.00 |")
    assert cpu_table([ours, base]).splitlines()[2:] == [
        "| 2-1-1-1 | 140 |  | 20 | 160 |",
        "| monolith |  | 120 |  | 120 |",
    ]
