"""Reliability under faults and change (`python -m loadtests.faults`): the summary's arithmetic and checks without
Ray, and the short forms of replica-kill and rolling-update (`--short`) against one application started as
`serve_config.yaml` runs it, in the layout docs/reliability.md recommends for this machine (two replicas of every
model deployment, `--replicas 1-2-2-2`), asserting the pass conditions: no request hangs, a killed model replica
costs at most 1 % of the uploads and the service is healthy again within 30 s (the Ingress's too), a rolling
update loses nothing and answers with no mix of versions. Both run in this process through the module's
functions, on one Ray started for the module and always shut down (a second start would cost a minute).

The rolling update rolls to a copy of the shipped models whose Ratingen scorer's card carries another version
(made here in a moment; the scenario's own default, an epoch-1 checkpoint of a short training run, takes minutes
to make once).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from deepxray.labels import JOINT_NAMES
from loadtests.checks import Expected
from loadtests.faults import (
    Attempt,
    checks,
    healthy_again,
    judge,
    memory_figures,
    model_sources,
    models_of,
    parse_options,
    prepare,
    retry_after_of,
    run_on,
    service_for,
    to_json,
)
from loadtests.harness import models_dir, models_present
from loadtests.pool import PoolImage, ensure_pool

ROOT = Path(__file__).resolve().parents[1]
TAGS = {
    "body_part": "body_part@1.0.0",
    "joint_detection": "joint_detection@1.0.0",
    "ratingen_score": "ratingen_score@1.0.0",
}
HAND = PoolImage("png", "a.png", b"", Expected("left_hand", "L"))


def answer(models: dict) -> bytes:
    scores = {name: 0 for name in JOINT_NAMES}
    return json.dumps({"scores": scores, "models": models}).encode()


# ------------------------------------------------------------------------------------------- without Ray


def test_versions_of_an_answer_and_their_mix():
    pairs, mixed = models_of(answer(TAGS))
    assert pairs == tuple(sorted(TAGS.items())) and not mixed
    for two in (["ratingen_score@1.0.0", "ratingen_score@1.0.0-epoch01"], "ratingen_score@1.0.0,ratingen_score@2"):
        pairs, mixed = models_of(answer({**TAGS, "ratingen_score": two}))
        assert mixed and dict(pairs)["ratingen_score"].count("@") == 2
    assert models_of(b"not json") == (None, False)
    assert models_of(answer({**TAGS, "ratingen_score": ["ratingen_score@1.0.0"] * 2}))[1] is False


def test_answers_sorted_into_outcomes():
    assert judge(504, b'{"error": "stage_timeout"}', HAND) == ("5xx", "504 stage_timeout")
    assert judge(500, b"Internal Server Error", HAND) == ("5xx", "500 Internal Server Error")
    assert judge(422, b'{"error": "joints_not_found"}', HAND)[0] == "unexpected"
    assert judge(404, b"{}", HAND)[0] == "unexpected"
    assert retry_after_of({"retry-after": "2"}) == 2.0
    assert retry_after_of({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}) is None
    assert retry_after_of({}) is None and retry_after_of(None) is None


def summary_of(scenario: str, failed: int = 0, uploads: int = 200, longest: float = 3.0, **extra) -> dict:
    return {
        "failed": {"timeout": 0, "connection_error": 0, "5xx": failed, "unexpected": 0},
        "uploads": uploads,
        "longest_latency_s": longest,
        "retried_503": 4,
        "faults": extra.pop("faults", []),
        "mixed_version_answers": extra.pop("mixed", 0),
        **extra,
    }


def test_the_checks_say_pass_or_fail():
    kill = Namespace(scenario="replica-kill")
    faults = [
        {"fault": "SIGKILL BodyPart replica", "healthy_again_s": 12.5, "failed": 2},
        {"fault": "SIGKILL Ingress replica", "healthy_again_s": 1.5, "failed": 4},
    ]
    lines = checks(kill, summary_of("replica-kill", failed=6, faults=faults), limit=15)
    assert [line.split()[0] for line in lines] == ["PASS", "PASS", "PASS", "INFO", "PASS"]
    assert lines[1] == "PASS SIGKILL BodyPart replica cost 2 of 200 uploads (1.0 %), at most 1%"
    faults[0].update(failed=3, healthy_again_s=None)
    lines = checks(kill, summary_of("replica-kill", failed=7, longest=15.2, faults=faults), 15)
    assert [line.split()[0] for line in lines] == ["FAIL", "FAIL", "FAIL", "INFO", "PASS"]

    roll = Namespace(scenario="rolling-update")
    step = {"fault": "deploy models_dir x", "first_answer_of_new_set_s": 20.0}
    assert all(line.startswith("PASS") for line in checks(roll, summary_of("rolling-update", faults=[step]), 15))
    lines = checks(roll, summary_of("rolling-update", failed=1, mixed=2, faults=[step]), 15)
    assert [line.split()[0] for line in lines] == ["PASS", "FAIL", "PASS", "FAIL"]


def test_healthy_again_after_the_last_failure_of_a_fault():
    faults = [{"at_s": 10.0, "readyz_s": 3.0}, {"at_s": 40.0, "readyz_s": 1.0}]
    attempts = [
        Attempt(8.0, 1.0, 200, "ok", ""),
        Attempt(9.0, 10.0, 504, "5xx", "504 stage_timeout"),  # in flight at the first fault
        Attempt(12.0, 0.5, 200, "ok", ""),  # answered, but a failure came after it
        Attempt(13.0, 10.0, 504, "5xx", "504 stage_timeout"),
        Attempt(14.0, 2.0, 200, "ok", ""),
        Attempt(30.0, 1.0, 503, "retried_503", "503 overloaded"),  # retried: no failure
        Attempt(39.5, 0.7, 500, "5xx", "500 Internal Server Error"),  # in flight at the second fault
        Attempt(40.5, 0.5, 200, "ok", ""),
    ]
    healthy_again(faults, attempts, end=60.0)
    assert (faults[0]["healthy_again_s"], faults[0]["failed"]) == (6.0, 2)
    assert (faults[1]["healthy_again_s"], faults[1]["failed"]) == (1.0, 1)
    lonely = [{"at_s": 10.0, "readyz_s": 1.0}]
    healthy_again(lonely, [Attempt(11.0, 10.0, 504, "5xx", "")], end=30.0)
    assert lonely[0]["healthy_again_s"] is None


def test_memory_growth_from_minute_two_to_the_end():
    # Six samples a minute for ten minutes: the ingress grows 1 MiB a minute and jumps for one sample (films in
    # flight), the body-part replica grows 30 MiB in its last minute.
    samples = []
    for k in range(60):
        minute = k // 6
        ingress = 200.0 + minute + (80.0 if k % 6 == 3 else 0.0)
        samples.append(
            {"at_s": 10.0 * k, "rss_mb": {"Ingress 10": ingress, "BodyPart 11": 530.0 if minute == 9 else 500.0}}
        )
    figures = memory_figures(samples, duration_s=600, period_s=60)
    assert figures["memory_at_s"] == [60.0 * m for m in range(10)] and figures["memory_from_s"] == 120.0
    assert figures["memory_rss_mb"]["Ingress 10"][:3] == [200.0, 201.0, 202.0]  # medians: the jump left out
    assert figures["memory_growth_pct"] == {"BodyPart 11": 6.0, "Ingress 10": round(100 * 7 / 202, 2)}
    soak = Namespace(scenario="soak")
    lines = checks(soak, summary_of("soak", **figures), 15)
    assert lines[-1].startswith("FAIL memory growth at most 5 %") and "6.0 % (BodyPart 11)" in lines[-1]


def test_the_summary_is_json_in_short_lines():
    summary = {"scenario": "soak", "failed_at_s": [round(0.1 * i, 1) for i in range(200)], "faults": [{"at_s": 1.0}],
               "profile": {"Ingress": {"replicas": 2, "health_check_period_s": 2.0}}}  # fmt: skip
    text = to_json(summary)
    assert json.loads(text) == summary
    assert all(len(line) <= 116 for line in text.splitlines())
    assert '  "faults": [{"at_s": 1.0}],' in text.splitlines()


def test_options():
    options = parse_options(["replica-kill", "--short", "--health-check", "2:4", "--arg", "stage_timeout_s=5"])
    assert options.settle_s == 3 and options.health_check == (2.0, 4.0) and options.app_args == {"stage_timeout_s": "5"}
    soak = parse_options(["soak"])
    assert soak.duration_s == 600 and soak.sample_s == 60
    assert parse_options(["soak", "--short"]).duration_s == 60
    with pytest.raises(SystemExit):
        parse_options(["replica-kill", "--replicas", "1-1-1"])


def test_a_fault_that_needs_the_replicas_is_refused_against_a_running_service_in_one_sentence():
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.faults", "replica-kill", "--url", "http://127.0.0.1:9"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "faults: replica-kill needs the replicas' processes and handles, so it runs only against a service it "
        "starts itself: leave out --url"
    ]


# --------------------------------------------------------------------------------- short forms, real service


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Two hands in each format and one non-hand, full size (as tests/test_loadtests.py makes them)."""
    return ensure_pool(tmp_path_factory.mktemp("pool"), hands=2, others=1, seed=6100)


@pytest.fixture(scope="module")
def second_models(tmp_path_factory) -> Path:
    """The service's models with the Ratingen scorer's card at another version (a copy; the others linked)."""
    base = models_dir()
    folder = tmp_path_factory.mktemp("rollout-models")
    for name, source in model_sources(base, base).items():
        if name == "ratingen_score":
            shutil.copytree(source, folder / name)
            card = json.loads((folder / name / "model_card.json").read_text(encoding="utf-8"))
            card["version"] = f"{card['version']}-faults-test"
            (folder / name / "model_card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
        else:
            (folder / name).symlink_to(source.resolve(), target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def service(pool):
    """One application for both short forms (a start costs a minute here), in the layout docs/reliability.md
    recommends for this machine: two replicas of every model deployment, so a model replica killed or replaced
    leaves one serving. Started on a Ray of this process's own; Serve and Ray shut down after the module."""
    if not models_present():
        pytest.skip("no model artifacts: train them (deepxray train) or set DEEPXRAY_MODELS_DIR")
    with service_for(parse_options(["replica-kill", *LAYOUT])) as running:
        yield running


# Two clients rather than four: the replicas a rolling update replaces start sooner on 2 cores that the load
# leaves some room on (the short forms then take about 2 minutes after the application's start).
LAYOUT = ["--replicas", "1-2-2-2", "--clients", "2"]


def short_run(service, pool, *args: str) -> dict:
    """A scenario's short form against `service` (as `python -m loadtests.faults ... --short` runs it)."""
    options = parse_options([*args, "--short", "--pool", str(pool), *LAYOUT])
    summary = run_on(service, prepare(options), options)
    print(to_json(summary))  # shown when the test fails
    return summary


def assert_passed(summary: dict) -> None:
    failing = [line for line in summary["checks"] if line.startswith("FAIL")]
    assert summary["passed"] and not failing, (failing, summary["failed_by_detail"], summary["faults"])


@pytest.mark.serve
@pytest.mark.slow
def test_replica_kill_short(service, pool):
    summary = short_run(service, pool, "replica-kill")
    assert [fault["fault"] for fault in summary["faults"]] == [
        "SIGKILL RatingenScore replica",
        "SIGKILL Ingress replica",
    ]
    assert summary["answered"].get("200", 0) > 0 and summary["failed"]["timeout"] == 0
    assert_passed(summary)


@pytest.mark.serve
@pytest.mark.slow
def test_rolling_update_short(service, pool, second_models):
    summary = short_run(service, pool, "rolling-update", "--rollout-models", str(second_models))
    tags = [step["models"]["ratingen_score"] for step in summary["faults"]]
    assert tags[0].endswith("-faults-test")
    # Answers came from both sets, and none mixed them.
    assert any("-faults-test" in key for key in summary["answers_by_models"])
    assert any("-faults-test" not in key for key in summary["answers_by_models"])
    assert summary["mixed_version_answers"] == 0
    assert_passed(summary)
