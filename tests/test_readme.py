"""Every command in the README is one that CI or this file runs."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# Smaller figures for the same commands, so the suite stays quick: the command is the README's, only the counts shrink.
SHRINK = {"--n": "2", "--write": "2", "--render": "2"}


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def shrink(command: str) -> list[str]:
    words = shlex.split(command)
    return [SHRINK.get(words[i - 1], w) if i else w for i, w in enumerate(words)]


def test_the_readme_test_command_is_the_one_ci_runs():
    test_command = readme_commands()[1]
    assert test_command.startswith("pip install -e '.[test]'")
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert test_command in ci_lines


@pytest.mark.slow
@pytest.mark.parametrize("command", [c.split(" && ", 1)[-1] for c in readme_commands()[:1]] + readme_commands()[2:])
def test_readme_command_runs(command, tmp_path):
    words = shrink(command)
    if words[0] == "deepxray":
        words = [str(Path(sys.executable).parent / "deepxray"), *words[1:]]
    elif words[0] == "python":
        words = [sys.executable, *words[1:]]
    else:
        pytest.fail(f"README command not covered by a test: {command}")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert any(tmp_path.iterdir()) or "images/s" in result.stdout
