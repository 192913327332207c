"""Every command in the README is one that CI or this file runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# The README's commands, with smaller counts so the suite stays quick; everything else is as written.
SHRINK = {"--n": "3", "--write": "2", "--render": "2", "--synthetic": "16", "--hands": "2", "--others": "2",
          "--balanced": "2", "--runs": "3"}  # fmt: skip


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def runnable(command: str) -> list[str]:
    """The command's words, shrunk, with `deepxray`/`python`/`serve` taken from this environment."""
    words = shlex.split(command)
    if words[0] in ("serve", "curl"):
        return [str(Path(sys.executable).parent / "serve"), *words[1:]] if words[0] == "serve" else words
    words = [SHRINK.get(words[i - 1], w) if i else w for i, w in enumerate(words)]
    if words[:2] == ["deepxray", "train"]:
        words += ["--epochs", "1"]
    if words[0] == "deepxray":
        return [str(Path(sys.executable).parent / "deepxray"), *words[1:]]
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    raise AssertionError(f"README command not covered by a test: {command}")


def test_the_readme_test_command_is_the_one_ci_runs():
    test_command = readme_commands()[1]
    assert test_command.startswith("pip install -e '.[test]'")
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert test_command in ci_lines


def wait_ready(url: str, server: subprocess.Popen, timeout_s: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, "serve run exited before the service was ready"
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise AssertionError(f"{url} not ready after {timeout_s} s")


@pytest.mark.slow
@pytest.mark.serve
def test_readme_commands_run_in_order(tmp_path):
    """As a newcomer would: one working directory, the commands in the README's order.

    `serve run` keeps running (in the background here) while the later commands, `curl` among them, talk to it.
    `models` in the working directory is the shipped model set, except for the training command, which writes its
    own; the quick start's install step is what this environment already did.
    """
    (tmp_path / "models").symlink_to(ROOT / "models")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    commands = [readme_commands()[0].split(" && ", 1)[1]] + readme_commands()[2:]
    server = None
    try:
        for command in commands:
            words = runnable(command)
            if words[0].endswith("serve") and words[1] == "run":
                server = subprocess.Popen(words, cwd=ROOT, env=env, start_new_session=True)
                wait_ready("http://127.0.0.1:8000/readyz", server)
                continue
            cwd = tmp_path
            if "train" in words or "checkpoint" in words:
                # Training writes its own `models` (with `_training/` checkpoints) beside the shipped ones.
                cwd = tmp_path / "training"
                cwd.mkdir(exist_ok=True)
            result = subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
            if "checkpoint" in words:  # the exported set, for the later commands run in the main folder
                out = words[words.index("--out") + 1]
                (tmp_path / out).symlink_to(cwd / out)
            if words[0] == "curl":
                answer = json.loads(result.stdout)
                assert set(answer["scores"]) == {"mcp1", "mcp2", "mcp3", "mcp4", "mcp5", "pip1", "pip2", "pip3",
                                                 "pip4", "pip5"}  # fmt: skip
                assert "research use only" in answer["notice"]
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGINT)  # serve run shuts its application and Ray down on Ctrl-C
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
    assert (tmp_path / "report" / "report.md").is_file()
    assert "B − A" in (tmp_path / "comparison" / "report.md").read_text(encoding="utf-8")
    assert (tmp_path / "training" / "models" / "ratingen_score" / "model_card.json").is_file()
