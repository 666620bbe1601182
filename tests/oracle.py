"""The ideal denoisers of Gaussian-mixture data, in closed form (DESIGN.md, Tests: oracle samplers): unconditional
(GaussianMixture) and class-conditional (ClassConditionalGaussians, for conditional sampling and guidance).

Data x_0 ~ Σ_k w_k N(m_k, s_k² I) in D dims, stored as tensors of shape (N, D, 1, 1) so samplers see images.
On the path x_t = α x_0 + σ ε: p(x_t) = Σ_k w_k N(α m_k, (α² s_k² + σ²) I), and the MMSE prediction is
E[x_0 | x_t] = Σ_k r_k(x_t) (m_k + α s_k² / (α² s_k² + σ²) (x_t − α m_k)), with posterior responsibilities r_k.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from denoising_diffusion.denoiser import Prediction
from denoising_diffusion.parameterization import score_from_eps
from denoising_diffusion.processes import NoiseSchedule


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
        """The ideal (x_t, t) -> Prediction at the schedule's times (any schedule: t[0] is read as its time)."""

        def denoise(x_t: Tensor, t: Tensor) -> Prediction:
            alpha, sigma = schedule.alpha_sigma(t[0].item())
            x0 = self.posterior_mean(x_t.double(), alpha, sigma).to(x_t.dtype)
            return Prediction(x0=x0, eps=(x_t - alpha * x0) / sigma)

        return denoise

    def velocity(self, schedule):
        """The ideal velocity field of flow matching, (x_t, t) -> E[dx_t/dt | x_t] = α'_t x̂_0 + σ'_t ε̂ with
        x̂_0 = E[x_0 | x_t] and ε̂ = (x_t − α_t x̂_0)/σ_t (Lipman et al. 2023, eq. 9: the marginal of the conditional
        velocities α'_t x_0 + σ'_t ε), on a path that declares (α'_t, σ'_t) (``schedule.path_derivatives_at``).
        x_t (N, D, 1, 1); t (N,) float times; returns (N, D, 1, 1) in float64."""

        def velocity(x_t: Tensor, t: Tensor) -> Tensor:
            time = t[:1].double()
            alpha, sigma = (float(v) for v in schedule.alpha_sigma_at(time))
            d_alpha, d_sigma = (float(v) for v in schedule.path_derivatives_at(time))
            x0 = self.posterior_mean(x_t.double(), alpha, sigma)
            return d_alpha * x0 + d_sigma * (x_t.double() - alpha * x0) / sigma

        return velocity

    def score(self, schedule):
        """The exact score (x_t, t) -> ∇ log p_t(x_t), built the way every sampler builds it: score_from_eps of the
        exact ε̂ (x_t (N, D, 1, 1), t (N,) the schedule's times; :meth:`log_marginal` checks it by autograd)."""
        denoise = self.denoiser(schedule)

        def score(x_t: Tensor, t: Tensor) -> Tensor:
            sigma = schedule.alpha_sigma(t[0].item())[1]
            return score_from_eps(denoise(x_t, t).eps, sigma)

        return score

    def log_marginal(self, x_t: Tensor, alpha: float, sigma: float) -> Tensor:
        """log p_t(x_t) = log Σ_k w_k N(x_t; α m_k, (α² s_k² + σ²) I) for x_t (N, D, 1, 1); returns (N,)."""
        x = x_t[:, :, 0, 0]
        var = alpha**2 * self.stds**2 + sigma**2  # (K,)
        sq = ((x[:, None, :] - alpha * self.means[None]) ** 2).sum(-1)  # (N, K)
        log_joint = self.weights.log() - 0.5 * self.dim * torch.log(2 * math.pi * var) - 0.5 * sq / var
        return torch.logsumexp(log_joint, dim=1)

    def assign(self, x: Tensor) -> Tensor:
        """Index of the nearest mode mean for each sample x (N, D, 1, 1)."""
        return torch.cdist(x[:, :, 0, 0].double(), self.means).argmin(1)


class ClassConditionalGaussians:
    """Labelled data for class-conditional sampling and guidance: class y ∈ {0, …, K−1} has probability w_y and
    x_0 | y ~ N(m_y, s_y² I).

    Works on images (N, C, H, W) with C = D: the class mean is the image whose channel c is m_y[c] at every pixel,
    and every element is independent given y (data shaped (N, D, 1, 1), as GaussianMixture's, is the 2-D case).

    * Conditional (one Gaussian, elementwise): E[x_0 | x_t, y] = m_y + α s_y² / (α² s_y² + σ²) (x_t − α m_y), hence
      ε̂_y = (x_t − α x̂_0)/σ = σ (x_t − α m_y) / (α² s_y² + σ²).
    * Unconditional (the mixture Σ_y w_y N(m_y, s_y² I)): E[x_0 | x_t] = Σ_y p(y | x_t) E[x_0 | x_t, y] with
      log p(y | x_t) = log w_y + log N(x_t; α m_y, (α² s_y² + σ²) I) − log Σ (over all elements of the image).

    Computed in float64 and returned in x_t's dtype. Denoisers are built for a NoiseSchedule's discrete indices.
    """

    def __init__(self, weights: list[float], means: list[list[float]], stds: list[float]) -> None:
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.means = torch.tensor(means, dtype=torch.float64)  # (K, D)
        self.stds = torch.tensor(stds, dtype=torch.float64)  # (K,)
        self.dim = self.means.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.weights)

    def labels(self, n: int, generator: torch.Generator) -> Tensor:
        """n labels drawn from the class weights, (n,) int64."""
        return torch.multinomial(self.weights, n, replacement=True, generator=generator)

    def _class_images(self, labels: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(m_y, s_y) of each sample as tensors broadcastable to ``like`` (N, C, H, W), float64."""
        mean = self.means[labels.cpu()].view(len(labels), self.dim, *([1] * (like.ndim - 2)))
        std = self.stds[labels.cpu()].view(len(labels), *([1] * (like.ndim - 1)))
        return mean.to(like.device), std.to(like.device)

    def conditional_mean(self, x_t: Tensor, labels: Tensor, alpha: float, sigma: float) -> Tensor:
        """E[x_0 | x_t, y] for each sample's label, x_t (N, C, H, W); float64."""
        x = x_t.double()
        m, s = self._class_images(labels, x)
        return m + alpha * s**2 / (alpha**2 * s**2 + sigma**2) * (x - alpha * m)

    def class_log_posterior(self, x_t: Tensor, alpha: float, sigma: float) -> Tensor:
        """log p(y | x_t), (N, K), float64 (differentiable in x_t)."""
        x = x_t.double()
        elements = x[0].numel()
        var = alpha**2 * self.stds**2 + sigma**2  # (K,)
        means = self.means.view(1, self.num_classes, self.dim, *([1] * (x.ndim - 2))).to(x.device)
        sq = ((x[:, None] - alpha * means) ** 2).flatten(2).sum(-1)  # (N, K)
        log_joint = self.weights.log() - 0.5 * elements * torch.log(2 * math.pi * var) - 0.5 * sq / var
        return torch.log_softmax(log_joint, dim=1)

    def unconditional_mean(self, x_t: Tensor, alpha: float, sigma: float) -> Tensor:
        """E[x_0 | x_t] = Σ_y p(y | x_t) E[x_0 | x_t, y], x_t (N, C, H, W); float64."""
        r = self.class_log_posterior(x_t, alpha, sigma).exp()  # (N, K)
        out = torch.zeros_like(x_t, dtype=torch.float64)
        for y in range(self.num_classes):
            labels = torch.full((len(x_t),), y, dtype=torch.long)
            out = out + r[:, y].view(-1, *([1] * (x_t.ndim - 1))) * self.conditional_mean(x_t, labels, alpha, sigma)
        return out

    @staticmethod
    def _prediction(x_t: Tensor, x0: Tensor, alpha: float, sigma: float) -> Prediction:
        x0 = x0.to(x_t.dtype)
        return Prediction(x0=x0, eps=(x_t - alpha * x0) / sigma)

    def denoiser(self, schedule: NoiseSchedule, labels: Tensor):
        """The exact conditional denoiser with ``labels`` (N,) bound: samplers see only (x_t, t)."""

        def denoise(x_t: Tensor, t: Tensor) -> Prediction:
            alpha, sigma = schedule.alpha_sigma(t[0].item())
            return self._prediction(x_t, self.conditional_mean(x_t, labels, alpha, sigma), alpha, sigma)

        return denoise

    def unconditional_denoiser(self, schedule: NoiseSchedule):
        """The exact denoiser of the mixture (what a model trained with the label dropped learns)."""

        def denoise(x_t: Tensor, t: Tensor) -> Prediction:
            alpha, sigma = schedule.alpha_sigma(t[0].item())
            return self._prediction(x_t, self.unconditional_mean(x_t, alpha, sigma), alpha, sigma)

        return denoise

    def branches(self, schedule: NoiseSchedule, labels: Tensor):
        """(x_t, t) -> (conditional, unconditional) Predictions, the labels held here: what
        guidance.classifier_free_guidance takes."""
        cond, uncond = self.denoiser(schedule, labels), self.unconditional_denoiser(schedule)
        return lambda x_t, t: (cond(x_t, t), uncond(x_t, t))


class CorrelatedGaussian:
    """Data x_0 ~ N(μ, Σ) with a full covariance, stored as images (N, C, H, W) of D = C·H·W elements (flattened in
    row-major order): the case where conditioning on some pixels changes the others, for inpainting.

    * Denoiser: on x_t = α x_0 + σ ε, x_t ~ N(α μ, α² Σ + σ² I) jointly with x_0, so
      E[x_0 | x_t] = μ + α Σ (α² Σ + σ² I)⁻¹ (x_t − α μ).
    * Conditional (Schur complement): with K the known and U the unknown elements,
      x_U | x_K = y ~ N(μ_U + Σ_UK Σ_KK⁻¹ (y − μ_K), Σ_UU − Σ_UK Σ_KK⁻¹ Σ_KU).

    Computed in float64; predictions are returned in x_t's dtype.
    """

    def __init__(self, mean: list[float], cov: list[list[float]], shape: tuple[int, int, int]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float64)  # (D,)
        self.cov = torch.tensor(cov, dtype=torch.float64)  # (D, D)
        self.shape = shape
        self.dim = len(mean)
        if math.prod(shape) != self.dim or tuple(self.cov.shape) != (self.dim, self.dim):
            raise ValueError("mean, cov and shape disagree")
        self.chol = torch.linalg.cholesky(self.cov)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.mean + z @ self.chol.T).view(n, *self.shape)

    def posterior_mean(self, x_t: Tensor, alpha: float, sigma: float) -> Tensor:
        """E[x_0 | x_t] for x_t (N, C, H, W); float64, same shape."""
        x = x_t.double().reshape(len(x_t), self.dim)
        eye = torch.eye(self.dim, dtype=torch.float64)
        gain = alpha * self.cov @ torch.linalg.inv(alpha**2 * self.cov + sigma**2 * eye)
        return (self.mean + (x - alpha * self.mean) @ gain.T).view(x_t.shape)

    def denoiser(self, schedule: NoiseSchedule):
        """The ideal (x_t, t) -> Prediction for this schedule's discrete time indices."""

        def denoise(x_t: Tensor, t: Tensor) -> Prediction:
            alpha, sigma = schedule.alpha_sigma(t[0].item())
            x0 = self.posterior_mean(x_t, alpha, sigma).to(x_t.dtype)
            return Prediction(x0=x0, eps=(x_t - alpha * x0) / sigma)

        return denoise

    def conditional(self, known: list[int], values: Tensor) -> tuple[list[int], Tensor, Tensor]:
        """(unknown indices, mean (|U|,), covariance (|U|, |U|)) of x_U given x_K = values (the Schur complement)."""
        unknown = [i for i in range(self.dim) if i not in known]
        s_uk = self.cov[unknown][:, known]
        gain = s_uk @ torch.linalg.inv(self.cov[known][:, known])
        mean = self.mean[unknown] + gain @ (values.double() - self.mean[known])
        return unknown, mean, self.cov[unknown][:, unknown] - gain @ s_uk.T
