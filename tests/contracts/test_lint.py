"""Lint and types are part of the test command (README, `.ci/run`): ruff's lint rules and formatting, and mypy on the
package, with the versions and settings pinned in pyproject.toml. Each prints what it found when it fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_clean(command: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", *command], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)} found problems:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
