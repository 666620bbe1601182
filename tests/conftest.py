"""Shared test fixtures: the closed-form denoiser of a Gaussian mixture, used by the oracle sampler tests."""

from __future__ import annotations

import pytest
import torch
from oracle import GaussianMixture


@pytest.fixture
def mixture() -> GaussianMixture:
    """Two well-separated isotropic modes in 2-D with unequal weights and spreads."""
    return GaussianMixture(weights=[0.3, 0.7], means=[[-2.0, -1.0], [2.0, 1.0]], stds=[0.3, 0.5])


@pytest.fixture
def gaussian() -> GaussianMixture:
    """A single Gaussian N(m, s²I): the case where every quantity is known in closed form."""
    return GaussianMixture(weights=[1.0], means=[[0.5, -0.25]], stds=[0.4])


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    """Tiny models run fastest on one thread, and on a 2-core machine a second busy process makes 2-thread ops
    stall (oversubscription): one thread keeps the suite's time predictable."""
    torch.set_num_threads(1)
