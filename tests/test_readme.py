"""Every command in the README is one that CI or this file runs, from a clean copy of the checkout."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loadtests.harness import port_in_use, service_process, wait_until

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# The README's commands, with smaller counts so the suite stays quick; everything else is as written.
SHRINK = {"--n": "3", "--write": "2", "--render": "2", "--synthetic": "16", "--hands": "2", "--others": "2",
          "--balanced": "2", "--both-hands": "2", "--runs": "3"}  # fmt: skip
PROGRAMS = {"deepxray", "python", "serve", "curl", "openssl"}
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", flags=re.S)
PORT = 8000  # the README's


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def parsed(command: str) -> tuple[dict[str, str], list[str]]:
    """A README command's leading `NAME=value` environment assignments, and its words from the program on; an
    AssertionError for a program no test runs."""
    words = shlex.split(command)
    assignments = {}
    while words and ASSIGNMENT.fullmatch(words[0]):
        name, value = words.pop(0).split("=", 1)
        assignments[name] = value
    if not words or words[0] not in PROGRAMS:
        raise AssertionError(f"README command not covered by a test: {command}")
    return assignments, words


def runnable(command: str) -> str:
    """The command as bash runs it here (the environment's `deepxray`, `python` and `serve` first on PATH):
    counts shrunk and training cut to one epoch; everything else, `$(...)` and `NAME=value` included, as written."""
    _, words = parsed(command)
    command = re.sub(rf"(?<!\S)({'|'.join(map(re.escape, SHRINK))})\s+\S+", lambda m: f"{m[1]} {SHRINK[m[1]]}", command)
    return f"{command} --epochs 1" if words[:2] == ["deepxray", "train"] else command


def served_scheme(target: str, checkout: Path) -> tuple[str, Path | None]:
    """What `serve run TARGET` serves: https (with the certificate to verify it against: the README's is
    self-signed) when TARGET is a profile with TLS on, else http."""
    if not target.endswith((".yaml", ".yml")):
        return "http", None
    options = yaml.safe_load((checkout / target).read_text(encoding="utf-8")).get("http_options") or {}
    return ("https", Path(options["ssl_certfile"])) if options.get("ssl_certfile") else ("http", None)


def check_curl_answer(command: str, stdout: str, status: str | None, auth_mode: str) -> None:
    """A score (200) as the README promises it (or a list of cases, a review saved); or, from a service with access control, a curl that sends no
    credential refused with 401 `missing_credential` (curl exits 0 on a 401: its answer tells)."""
    answer = json.loads(stdout)
    if auth_mode != "none" and "Authorization" not in command:
        assert (status, answer["error"]) == ("401", "missing_credential"), f"{command}\n{status} {stdout[:500]}"
        return
    assert status == "200", f"{command}\n{status} {stdout[:500]}"
    if "/v1/cases" in command:  # the review API: a review saved, or a list of cases
        if "-X PUT" in command:
            assert [event["decision"] for event in answer["history"]] == ["corrected"], stdout[:500]
        else:
            assert answer["total"] >= 1 and answer["cases"], stdout[:500]
        return
    if "/analyze" in command and "findings" in answer:  # a chest film: the fourteen labels and their heatmaps
        assert len(answer["findings"]) == 14 and set(answer["heatmaps"]) == set(answer["positive"]), stdout[:500]
        assert "research use only" in answer["notice"]
        return
    assert set(answer["scores"]) == {"mcp1", "mcp2", "mcp3", "mcp4", "mcp5", "pip1", "pip2", "pip3", "pip4", "pip5"}
    assert "research use only" in answer["notice"]


def test_the_readme_test_command_is_the_one_ci_runs():
    test_command = readme_commands()[1]
    assert test_command.startswith("pip install -e '.[test]'")
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert test_command in ci_lines


def clean_copy(folder: Path) -> Path:
    """The checkout as a fresh clone would have it, with the working tree's changes: every file git tracks or
    would track (nothing it ignores, such as build/ or models/_training/ beyond what is committed), copied."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True)  # fmt: skip
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    for name in sorted(set(filter(None, listed.stdout.split("\0")))):
        source, target = ROOT / name, folder / name
        if source.is_file():  # not one deleted in the working tree
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    return folder


def files_under(folder: Path) -> set[str]:
    return {
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.mark.slow
@pytest.mark.serve
def test_readme_commands_run_in_order(tmp_path):
    """As a newcomer would on a fresh clone: the commands in the README's order, in a clean copy of the checkout
    (its code, its shipped models and checkpoints; nothing git ignores).

    Each command runs as written through bash (`NAME=value` before it, `$(...)` in it), with this environment's
    `deepxray`, `python` and `serve` first on PATH. `serve run` keeps running (in the background here, on the
    README's port 8000, refused when another service holds it; over https, verified against the profile's own
    certificate, when it serves a profile with TLS on) while the later commands, `curl` among them, talk to it; a
    later `serve run` stops it first. A `curl` must get a score, or, without a credential from a service started
    with access control, a 401 `missing_credential`. The training commands write under `build/` like every
    other, so the shipped models stay what the service and the other commands use; the quick start's install
    step is what this environment already did.
    """
    checkout = clean_copy(tmp_path / "checkout")
    shipped = files_under(checkout)
    env = {name: value for name, value in os.environ.items() if not name.startswith("DEEPXRAY_")}
    env["PYTHONPATH"] = str(checkout)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    commands = [readme_commands()[0].split(" && ", 1)[1]] + readme_commands()[2:]
    if any(parsed(command)[1][0] == "openssl" for command in commands):
        assert shutil.which("openssl", path=env["PATH"]), "the README's openssl command needs openssl installed"
    with contextlib.ExitStack() as running:
        service = running.enter_context(contextlib.ExitStack())  # the `serve run` now running, if any
        auth_mode = "none"
        for command in commands:
            assignments, words = parsed(command)
            if words[:2] == ["serve", "run"]:
                service.close()  # a second `serve run` takes the port of the first: stop that one first
                wait_until(lambda: not port_in_use(PORT), 60, f"port {PORT} free after the last `serve run`")
                scheme, ca_file = served_scheme(words[2], checkout)
                # serve run shuts its application and Ray down on Ctrl-C
                service.enter_context(service_process(["bash", "-c", runnable(command)], PORT, cwd=checkout,
                                                      env=env, stop_signal=signal.SIGINT, scheme=scheme,
                                                      ca_file=ca_file))  # fmt: skip
                auth_mode = assignments.get("DEEPXRAY_AUTH_MODE", "none")
                continue
            shell = runnable(command)
            if words[0] == "curl":  # the status on stderr; stdout stays what the reader sees
                shell += " --write-out '%{stderr}%{http_code}'"
            result = subprocess.run(["bash", "-c", shell], cwd=checkout, env=env, capture_output=True, text=True,
                                    timeout=600)  # fmt: skip
            assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
            if words[0] == "curl":
                status = re.search(r"(\d{3})\s*$", result.stderr)  # after curl's progress meter
                check_curl_answer(command, result.stdout, status and status[1], auth_mode)
    assert (checkout / "build" / "report" / "report.md").is_file()
    scored = (checkout / "build" / "scores.csv").read_text(encoding="utf-8").splitlines()
    assert scored[0].startswith("source,image_id,") and len(scored) > 3  # the registry's films, each once
    assert len({line.split(",")[1] for line in scored[1:]}) == 3
    assert (checkout / "build" / "scores-service.jsonl").read_text(encoding="utf-8").count("\n") == len(scored) - 1
    assert "B − A" in (checkout / "build" / "comparison" / "report.md").read_text(encoding="utf-8")
    assert (checkout / "build" / "models" / "ratingen_score" / "model_card.json").is_file()
    assert (checkout / "build" / "models-small-epoch1" / "ratingen_score" / "model_card.json").is_file()
    exported = (checkout / "build" / "reviewed" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(exported) == 2 and 3 in [json.loads(line)["joints"]["mcp2"]["score"] for line in exported]
    assert (checkout / "build" / "models-reviewed" / "ratingen_score" / "model_card.json").is_file()
    written = {name for name in files_under(checkout) - shipped if not name.startswith("build/")}
    assert not written, f"README commands wrote outside build/: {sorted(written)[:10]}"
