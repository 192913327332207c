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

from loadtests.harness import service_process

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# The README's commands, with smaller counts so the suite stays quick; everything else is as written.
SHRINK = {"--n": "3", "--write": "2", "--render": "2", "--synthetic": "16", "--hands": "2", "--others": "2",
          "--balanced": "2", "--both-hands": "2", "--runs": "3"}  # fmt: skip


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

    `serve run` keeps running (in the background here, on the README's port 8000, refused when another service
    holds it) while the later commands, `curl` among them, talk to it. The training commands write under
    `build/` like every other, so the shipped models stay what the service and the other commands use; the quick
    start's install step is what this environment already did.
    """
    checkout = clean_copy(tmp_path / "checkout")
    shipped = files_under(checkout)
    env = {name: value for name, value in os.environ.items() if not name.startswith("DEEPXRAY_")}
    env["PYTHONPATH"] = str(checkout)
    commands = [readme_commands()[0].split(" && ", 1)[1]] + readme_commands()[2:]
    with contextlib.ExitStack() as running:
        for command in commands:
            words = runnable(command)
            if words[0].endswith("serve") and words[1] == "run":
                # serve run shuts its application and Ray down on Ctrl-C
                running.enter_context(service_process(words, 8000, cwd=checkout, env=env, stop_signal=signal.SIGINT))
                continue
            result = subprocess.run(words, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
            if words[0] == "curl":
                answer = json.loads(result.stdout)
                assert set(answer["scores"]) == {"mcp1", "mcp2", "mcp3", "mcp4", "mcp5", "pip1", "pip2", "pip3",
                                                 "pip4", "pip5"}  # fmt: skip
                assert "research use only" in answer["notice"]
    assert (checkout / "build" / "report" / "report.md").is_file()
    assert "B − A" in (checkout / "build" / "comparison" / "report.md").read_text(encoding="utf-8")
    assert (checkout / "build" / "models" / "ratingen_score" / "model_card.json").is_file()
    assert (checkout / "build" / "models-small-epoch1" / "ratingen_score" / "model_card.json").is_file()
    written = {name for name in files_under(checkout) - shipped if not name.startswith("build/")}
    assert not written, f"README commands wrote outside build/: {sorted(written)[:10]}"
