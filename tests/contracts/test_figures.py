"""The docs' figure script (docs/figures.py): every image a docs page shows is one of its FIGURES, each figure is
drawn in a quick mode (small sizes; the committed PNGs use the defaults), and the exact denoiser of a training set
that draws the reverse trajectory is the posterior mean it claims to be."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def _figures():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIGURES = _figures()

QUICK = {
    "forward_process.png": {"size": 8, "times": (0, 500, 999)},
    "schedules.png": {"timesteps": 50},
    "reverse_trajectory.png": {"size": 8, "images": 4, "steps": 8},
    "score_sde_trajectories.png": {"samples": 40, "paths": 2},
    "cascade_augmentation.png": {"rows": 2, "levels": (0.1, 0.5)},
    "reflow_trajectories.png": {"samples": 40, "paths": 2, "pairs": 100},
}


@pytest.mark.parametrize("name", sorted(QUICK))
def test_each_figure_is_drawn_in_a_quick_mode(tmp_path: Path, name: str) -> None:
    path = FIGURES.FIGURES[name](tmp_path, **QUICK[name])
    assert path == tmp_path / name and path.read_bytes()[:8] == PNG and path.stat().st_size > 5_000


def test_every_image_in_the_docs_comes_from_the_figure_script() -> None:
    assert set(QUICK) == set(FIGURES.FIGURES)
    shown = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text()):
            path = (page.parent / target).resolve()
            assert path.parent == ROOT / "docs" / "figures", f"{page.name} shows {target}, not a docs/figures/ file"
            assert path.name in FIGURES.FIGURES, f"{page.name} shows {target}, which docs/figures.py does not draw"
            assert path.read_bytes()[:8] == PNG
            shown.add(path.name)
    committed = {p.name for p in (ROOT / "docs" / "figures").iterdir()}
    assert committed == set(FIGURES.FIGURES) and shown == committed  # nothing drawn and never shown, or stale


def test_the_training_set_denoiser_is_the_posterior_mean() -> None:
    """x̂_0 = E[x_0 | x_t] for data uniform on K images: Bayes' rule over the K Gaussians N(α_t x_k, σ_t² I)."""
    from denoising_diffusion.processes import NoiseSchedule

    schedule = NoiseSchedule.from_name("cosine", 100)
    images = torch.randn(3, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x_t = torch.randn(2, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([40, 70])
    pred = FIGURES.training_set_denoiser(schedule, images)(x_t, t)
    for b in range(2):
        alpha, sigma = schedule.alpha_sigma(int(t[b]))
        log_w = torch.stack([-((x_t[b] - alpha * x_k) ** 2).sum() / (2 * sigma**2) for x_k in images])
        expected = (torch.softmax(log_w, 0)[:, None, None, None] * images).sum(0)
        assert torch.allclose(pred.x0[b], expected) and torch.allclose(x_t[b], alpha * pred.x0[b] + sigma * pred.eps[b])
