"""The ideal denoiser of Gaussian-mixture data, in closed form (DESIGN.md, Tests: oracle samplers).

Data x_0 ~ Σ_k w_k N(m_k, s_k² I) in D dims, stored as tensors of shape (N, D, 1, 1) so samplers see images.
On the path x_t = α x_0 + σ ε: p(x_t) = Σ_k w_k N(α m_k, (α² s_k² + σ²) I), and the MMSE prediction is
E[x_0 | x_t] = Σ_k r_k(x_t) (m_k + α s_k² / (α² s_k² + σ²) (x_t − α m_k)), with posterior responsibilities r_k.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from denoising_diffusion.denoiser import Prediction
from denoising_diffusion.schedules import NoiseSchedule


class GaussianMixture:
    def __init__(self, weights: list[float], means: list[list[float]], stds: list[float]) -> None:
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.means = torch.tensor(means, dtype=torch.float64)  # (K, D)
        self.stds = torch.tensor(stds, dtype=torch.float64)  # (K,)
        self.dim = self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k, None] * z)[:, :, None, None]

    def posterior_mean(self, x_t: Tensor, alpha: float, sigma: float) -> Tensor:
        """E[x_0 | x_t] for x_t (N, D, 1, 1); returns (N, D, 1, 1)."""
        x = x_t[:, :, 0, 0]  # (N, D)
        var = alpha**2 * self.stds**2 + sigma**2  # (K,)
        diff = x[:, None, :] - alpha * self.means[None]  # (N, K, D)
        log_r = (
            self.weights.log() - 0.5 * self.dim * torch.log(2 * math.pi * var) - 0.5 * (diff**2).sum(-1) / var
        )  # (N, K)
        r = torch.softmax(log_r, dim=1)
        cond = self.means[None] + (alpha * self.stds**2 / var)[None, :, None] * diff  # (N, K, D)
        return (r[..., None] * cond).sum(1)[:, :, None, None]

    def denoiser(self, schedule: NoiseSchedule):
        """The ideal (x_t, t) -> Prediction for this schedule's discrete time indices."""

        def denoise(x_t: Tensor, t: Tensor) -> Prediction:
            alpha, sigma = schedule.alpha_sigma(int(t[0]))
            x0 = self.posterior_mean(x_t.double(), alpha, sigma).to(x_t.dtype)
            return Prediction(x0=x0, eps=(x_t - alpha * x0) / sigma)

        return denoise

    def assign(self, x: Tensor) -> Tensor:
        """Index of the nearest mode mean for each sample x (N, D, 1, 1)."""
        return torch.cdist(x[:, :, 0, 0].double(), self.means).argmin(1)
