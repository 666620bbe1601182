"""Class-conditional sampling and classifier-free guidance against closed forms (issue 10, deliverable 5).

No network and no training: the branches are the exact denoisers of Gaussian data (oracle.py), so every deviation is
a bug in guidance.py or a sampler, never a modelling error.

1. Class-conditional oracle (``ClassConditionalGaussians``): with the conditional denoiser bound to a batch of labels,
   every registered sampler reproduces each class's mean and spread.
2. The combination's identities: scale 1 is the conditional branch and scale 0 the unconditional one (x̂_0 and ε̂);
   the learned variance is the conditional branch's; rescale φ = 0 is a no-op and φ = 1 gives std(ε̃) = std(ε̂_y) per
   sample (Lin et al. 2024, Alg. 2); guidance is the implicit classifier's gradient (Ho & Salimans 2021, §3.2).
"""

from __future__ import annotations

import math

import pytest
import torch
from oracle import ClassConditionalGaussians, GaussianMixture

from denoising_diffusion.denoiser import Prediction
from denoising_diffusion.guidance import classifier_free_guidance, guided_prediction
from denoising_diffusion.samplers import SAMPLERS, SamplerName
from denoising_diffusion.schedules import NoiseSchedule, spaced_timesteps

F64 = torch.float64

# ----- 1. class-conditional sampling ---------------------------------------------------------------------------

CLASSES = ClassConditionalGaussians(
    weights=[0.2, 0.5, 0.3], means=[[-2.0, -1.0], [2.0, 1.0], [0.0, 2.0]], stds=[0.3, 0.5, 0.4]
)
N_CLASSES = 12000

STD_ALLOWANCE = {
    "ddpm": 0.017,
    "ddim": 0.11,
    "dpmpp_2m": 0.018,
    "dpmpp_2m_sde": 0.01,
    "heun": 0.035,
    "euler": 0.11,
    "euler_ancestral": 0.053,
}
"""Each sampler's discretization bias of a class's std at its recommended steps, relative, × 1.25 and rounded up.
Measured for single Gaussians with s ∈ {0.3, 0.4, 0.5} on the cosine and linear schedules (the largest relative
bias is at the narrowest class, s = 0.3): deterministic samplers exactly (their output is affine in x_T, so
x_T ∈ {0, e_1, e_2} gives its std), stochastic ones from 200 000 samples (standard error 0.16 %). The largest:
DDIM / Euler at 50 linspace steps on the linear schedule, 8.8 % too narrow."""


def class_options(name: str) -> dict:
    """The options GaussianDiffusion.sample would pass by default (DDIM at η = 0, DDPM with β̃)."""
    return SAMPLERS[SamplerName(name)].bind({}, defaults={"eta": 0.0, "variance": "fixed_small"})


@pytest.mark.parametrize("schedule_name", ["cosine", "linear"])
@pytest.mark.parametrize("name", [name.value for name in SAMPLERS])
def test_every_sampler_reproduces_each_class(name: str, schedule_name: str) -> None:
    """Samples grouped by the label bound to them (not by nearest mean) have that class's mean and std.

    With n samples of class y: the mean's standard error is s_y/√n, the std's relative one 1/√(2(n − 1)); each
    check allows 4 of them (n ≥ 2000 here) plus a bias. Mean: 0.02, for the samplers' start x_T ~ N(0, I) where the
    marginal is N(α m_y, (α² s_y² + σ²) I): the flow then falls short of m_y by |m_y| s_y/√(s_y² + σ̃_start²), at most
    0.013 per dimension here (the Karras spacing starts at σ̃ = 80), and the measured mean errors at the recommended
    steps stay within 0.001 of that. Std: STD_ALLOWANCE. DDIM runs at η = 0, DDPM with β̃ (the models' defaults)."""
    schedule = NoiseSchedule.from_name(schedule_name, 1000)
    info = SAMPLERS[SamplerName(name)]
    g = torch.Generator().manual_seed(0)
    labels = CLASSES.labels(N_CLASSES, g)
    x_T = torch.randn(N_CLASSES, CLASSES.dim, 1, 1, generator=g, dtype=F64)
    timesteps = spaced_timesteps(schedule, info.recommended_steps, info.spacing)
    x = info.fn(CLASSES.denoiser(schedule, labels), x_T, schedule, timesteps, generator=g, **class_options(name))
    for y in range(CLASSES.num_classes):
        xs = x[labels == y][:, :, 0, 0]
        n, m, s = len(xs), CLASSES.means[y], float(CLASSES.stds[y])
        mean_err = float((xs.mean(0) - m).abs().max())
        assert mean_err < 4 * s / math.sqrt(n) + 0.02, f"class {y}: mean {xs.mean(0).tolist()} != {m.tolist()}"
        std_err = float((xs.std(0) / s - 1).abs().max())
        assert std_err < 4 / math.sqrt(2 * (n - 1)) + STD_ALLOWANCE[name], f"class {y}: std {xs.std(0).tolist()} != {s}"


def test_class_conditional_oracle_marginalizes_to_the_mixture() -> None:
    """The unconditional branch Σ_y p(y | x_t) E[x_0 | x_t, y] equals GaussianMixture's posterior mean (written
    separately) for the same data without labels, and the class posterior sums to one."""
    schedule = NoiseSchedule.from_name("linear", 1000)
    mixture = GaussianMixture(CLASSES.weights.tolist(), CLASSES.means.tolist(), CLASSES.stds.tolist())
    x_t = 2 * torch.randn(64, 2, 1, 1, generator=torch.Generator().manual_seed(1), dtype=F64)
    for t in (0, 100, 500, 999):
        alpha, sigma = schedule.alpha_sigma(t)
        torch.testing.assert_close(
            CLASSES.unconditional_mean(x_t, alpha, sigma),
            mixture.posterior_mean(x_t, alpha, sigma),
            rtol=1e-12,
            atol=1e-12,
        )
        probs = CLASSES.class_log_posterior(x_t, alpha, sigma).exp().sum(1)
        torch.testing.assert_close(probs, torch.ones_like(probs), rtol=0, atol=1e-12)


# ----- 2. the combination's identities ---------------------------------------------------------------------------

LINEAR = NoiseSchedule.from_name("linear", 1000)
TIMES = (0, 10, 500, 999)


def class_batch(seed: int = 0, shape: tuple[int, ...] = (8, 2, 3, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(shape, generator=g, dtype=F64), torch.randint(0, 3, (shape[0],), generator=g)


def roundoff(alpha: float, sigma: float) -> float:
    """Round-off of float64 predictions of magnitude ~10: 1e-13 on ε̂, amplified by σ/α on x̂_0 = (x_t − σ ε̂)/α."""
    return 1e-13 * (1 + sigma / alpha)


@pytest.mark.parametrize("t", TIMES)
def test_scale_one_is_the_conditional_and_scale_zero_the_unconditional(t: int) -> None:
    """ε̃ = ε̂_∅ + s (ε̂_y − ε̂_∅): at s = 0 ε̃ is ε̂_∅ exactly (ε̂_∅ + 0 · d), at s = 1 ε̂_y up to one rounding;
    x̂_0 = (x_t − σ ε̃)/α then equals the branch's own x̂_0 to round-off. Through guided_prediction and through the
    classifier_free_guidance wrapper."""
    x_t, labels = class_batch()
    alpha, sigma = LINEAR.alpha_sigma(t)
    branches = CLASSES.branches(LINEAR, labels)
    tb = torch.full((len(x_t),), t, dtype=torch.long)
    cond, uncond = branches(x_t, tb)
    tol = roundoff(alpha, sigma)
    for scale, branch in ((0.0, uncond), (1.0, cond)):
        for guided in (
            guided_prediction(cond, uncond, x_t, alpha, sigma, scale),
            classifier_free_guidance(branches, LINEAR, scale)(x_t, tb),
        ):
            if scale == 0.0:
                assert torch.equal(guided.eps, branch.eps)
            torch.testing.assert_close(guided.eps, branch.eps, rtol=0, atol=1e-13)
            torch.testing.assert_close(guided.x0, branch.x0, rtol=0, atol=tol)


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("rescale", [0.0, 0.7])
def test_learned_variance_comes_from_the_conditional_branch(scale: float, rescale: float) -> None:
    """The sampled images are the conditional ones (GLIDE evaluates both halves and keeps the conditional half), so
    a learned variance v is the conditional branch's, at every scale; without one it stays None."""
    x_t, labels = class_batch()
    alpha, sigma = LINEAR.alpha_sigma(500)
    cond, uncond = CLASSES.branches(LINEAR, labels)(x_t, torch.full((len(x_t),), 500))
    v_cond, v_uncond = torch.full_like(x_t, 0.3), torch.full_like(x_t, -0.6)
    with_var = Prediction(cond.x0, cond.eps, v_cond), Prediction(uncond.x0, uncond.eps, v_uncond)
    assert guided_prediction(*with_var, x_t, alpha, sigma, scale, rescale).var_interp is v_cond
    wrapper = classifier_free_guidance(lambda x, t: with_var, LINEAR, scale, rescale)
    assert wrapper(x_t, torch.full((len(x_t),), 500)).var_interp is v_cond
    only_uncond = Prediction(cond.x0, cond.eps), Prediction(uncond.x0, uncond.eps, v_uncond)
    assert guided_prediction(*only_uncond, x_t, alpha, sigma, scale, rescale).var_interp is None


def eps_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, ε̂_y, ε̂_∅) for 4 samples (4, 3, 5, 5) whose scales differ by a factor of up to 8, so that a std over
    the whole batch is far from every sample's own."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=F64).view(-1, 1, 1, 1)
    x_t = torch.randn(4, 3, 5, 5, generator=g, dtype=F64) * spread
    cond = torch.randn(4, 3, 5, 5, generator=g, dtype=F64) * spread + 0.3
    uncond = 0.6 * cond + 0.5 * torch.randn(4, 3, 5, 5, generator=g, dtype=F64) * spread
    return x_t, cond, uncond


def prediction(x_t: torch.Tensor, eps: torch.Tensor, alpha, sigma) -> Prediction:
    return Prediction(x0=(x_t - sigma * eps) / alpha, eps=eps)


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.0, 7.5])
def test_rescale_zero_is_a_no_op(scale: float) -> None:
    x_t, c, u = eps_batch()
    alpha, sigma = LINEAR.alpha_sigma(300)
    cond, uncond = prediction(x_t, c, alpha, sigma), prediction(x_t, u, alpha, sigma)
    plain = guided_prediction(cond, uncond, x_t, alpha, sigma, scale)
    zero = guided_prediction(cond, uncond, x_t, alpha, sigma, scale, rescale=0.0)
    assert torch.equal(zero.eps, plain.eps) and torch.equal(zero.x0, plain.x0)
    assert torch.equal(plain.eps, u + scale * (c - u))


def per_sample_std(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).std(dim=1)


@pytest.mark.parametrize("scale", [0.0, 3.0, 7.5])
@pytest.mark.parametrize("rescale", [0.3, 0.7, 1.0])
def test_rescale_follows_lin_et_al_algorithm_2(scale: float, rescale: float) -> None:
    """Lin et al. 2024, Alg. 2, written out per sample b: x_cfg = ε̂_∅ + s (ε̂_y − ε̂_∅); x_rescaled = x_cfg ·
    std(ε̂_y,b)/std(x_cfg,b) (std over the sample's C·H·W elements); ε̃ = φ x_rescaled + (1 − φ) x_cfg. At φ = 1,
    std(ε̃) = std(ε̂_y) per sample and ε̃ points along x_cfg. x̂_0 follows the rescaled ε̃: x_t = α x̂_0 + σ ε̃."""
    x_t, c, u = eps_batch(1)
    alpha = torch.tensor([0.9, 0.5, 0.2, 0.05], dtype=F64).view(-1, 1, 1, 1)  # a batch of times
    sigma = (1 - alpha**2).sqrt()
    cond, uncond = prediction(x_t, c, alpha, sigma), prediction(x_t, u, alpha, sigma)
    guided = guided_prediction(cond, uncond, x_t, alpha, sigma, scale, rescale)
    expected = []
    for b in range(len(x_t)):
        cfg = u[b] + scale * (c[b] - u[b])
        rescaled = cfg * (c[b].std() / cfg.std())
        expected.append(rescale * rescaled + (1 - rescale) * cfg)
    torch.testing.assert_close(guided.eps, torch.stack(expected), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alpha * guided.x0 + sigma * guided.eps, x_t, rtol=1e-12, atol=1e-12)
    if rescale == 1.0:
        torch.testing.assert_close(per_sample_std(guided.eps), per_sample_std(c), rtol=1e-12, atol=0)
        cfg = u + scale * (c - u)
        cosine = torch.nn.functional.cosine_similarity(guided.eps.flatten(1), cfg.flatten(1))
        torch.testing.assert_close(cosine, torch.ones_like(cosine), rtol=0, atol=1e-12)


@pytest.mark.parametrize("t", [30, 300, 800])
def test_guidance_is_the_implicit_classifier_gradient(t: int) -> None:
    """Ho & Salimans 2021, §3.2: with ε̂ = −σ ∇ log p(x_t), ε̂_y − ε̂_∅ = −σ ∇ log p(y | x_t), so the guided ε̃ is
    ε̂_∅ − s σ ∇_{x_t} log p(y | x_t): classifier guidance with the implicit classifier. The gradient of the exact
    class posterior comes from autograd; ε̂_∅ from the mixture."""
    x_t, labels = class_batch(2, shape=(6, 2, 1, 1))
    alpha, sigma = LINEAR.alpha_sigma(t)
    x = x_t.clone().requires_grad_(True)
    log_post = CLASSES.class_log_posterior(x, alpha, sigma).gather(1, labels[:, None]).sum()
    (grad,) = torch.autograd.grad(log_post, x)
    uncond = CLASSES.unconditional_denoiser(LINEAR)(x_t, torch.full((6,), t))
    for scale in (0.0, 1.0, 4.0):
        guided = classifier_free_guidance(CLASSES.branches(LINEAR, labels), LINEAR, scale)(x_t, torch.full((6,), t))
        torch.testing.assert_close(guided.eps, uncond.eps - scale * sigma * grad, rtol=1e-9, atol=1e-10)
