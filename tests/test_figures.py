"""The docs' figure script runs and writes its figures (at a small size; the figures themselves are closed forms)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _figures():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_score_sde_figure_is_written(tmp_path: Path) -> None:
    path = _figures().score_sde_trajectories(tmp_path, samples=40, paths=2)
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_reflow_figure_is_written(tmp_path: Path) -> None:
    path = _figures().reflow_trajectories(tmp_path, samples=40, paths=2, pairs=100)
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
