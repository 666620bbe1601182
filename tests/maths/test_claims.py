"""The README's claims, each against a computation written here from first principles (issue 9, part 3).

Nothing below compares a function with itself or with a branch that shares its code. The reference quantities are
derived in this file from the betas alone: ᾱ by a cumulative product, q(x_s | x_t, x_0) by conditioning the joint
Gaussian of the forward process (``forward_conditional``), the Gaussian KL, the discretized decoder over 256 bins,
the prior KL, the DPM-Solver++(2M) recursion and the clipped DDIM step. The denoisers are linear predictors whose
x̂_0 is known in closed form, so every term of the bound and every sampler step has an exact expected value.

Units: the package reports the bound in bits per dimension, Σ_d nats / (D ln 2), for data on the 8-bit grid
{2k/255 − 1} in [−1, 1] (images k/255 in [0, 1]).
"""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

from denoising_diffusion.denoiser import Prediction
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.likelihood import bits_per_dim, vlb_terms
from denoising_diffusion.processes import NoiseSchedule
from denoising_diffusion.samplers import sample_ddpm, sample_dpmpp_2m

F64 = torch.float64
LN2 = math.log(2.0)


# ----- independent references ----------------------------------------------------------------------------------


def alphabar(betas: Tensor) -> Tensor:
    """ᾱ_t = ∏_{u ≤ t} (1 − β_u), float64."""
    return torch.cumprod(1 - betas.to(F64), dim=0)


def forward_conditional(ab_s: float, ab_t: float) -> tuple[float, float, float]:
    """q(x_s | x_t, x_0), s < t, per dimension, by brute-force conditioning of the forward process's joint Gaussian.

    Given x_0: x_s = √ᾱ_s x_0 + √(1 − ᾱ_s) ε and x_t = √a x_s + √(1 − a) ε' with a = ᾱ_t/ᾱ_s (one step of the
    possibly respaced chain), so (x_s, x_t) = μ(x_0) + A (ε, ε') and Σ = A Aᵀ. Conditioning on x_t:
    E = μ_s + Σ_12 Σ_22⁻¹ (x_t − μ_t), Var = Σ_11 − Σ_12 Σ_22⁻¹ Σ_21. ᾱ_s = 1 names clean data (s = −1).
    Returns (c_0, c_t, var) with E = c_0 x_0 + c_t x_t.
    """
    a = ab_t / ab_s
    A = torch.tensor([[math.sqrt(1 - ab_s), 0.0], [math.sqrt(a) * math.sqrt(1 - ab_s), math.sqrt(1 - a)]], dtype=F64)
    cov = A @ A.T
    gain = cov[0:1, 1:] @ torch.linalg.inv(cov[1:, 1:])  # Σ_12 Σ_22⁻¹, (1, 1)
    var = cov[0:1, 0:1] - gain @ cov[1:, 0:1]
    c_t = float(gain)
    return math.sqrt(ab_s) - c_t * math.sqrt(ab_t), c_t, max(float(var), 0.0)


def gaussian_kl(m1: Tensor, v1: Tensor | float, m2: Tensor, v2: Tensor | float) -> Tensor:
    """KL(N(m1, v1) || N(m2, v2)) elementwise, nats."""
    v1, v2 = torch.as_tensor(v1, dtype=F64), torch.as_tensor(v2, dtype=F64)
    return 0.5 * (torch.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)


def decoder_nll(x0: Tensor, mean: Tensor, std: Tensor | float) -> Tensor:
    """−log P(bin of x0) under N(mean, std²), bins of width 2/255 centred on the grid 2k/255 − 1, the two edge bins
    extended to ±∞ (Ho et al. 2020, eq. 13). Elementwise nats. Tail-safe difference of normal CDFs."""
    k = torch.round((x0 + 1) * 127.5)
    lo = torch.where(k == 0, torch.full_like(x0, -math.inf), x0 - 1 / 255)
    hi = torch.where(k == 255, torch.full_like(x0, math.inf), x0 + 1 / 255)
    a, b = (lo - mean) / std, (hi - mean) / std
    upper = (a + b) > 0  # the bin is right of the mean: use upper tails, which keep their precision
    ndtr = torch.special.ndtr
    p = torch.where(upper, ndtr(-a) - ndtr(-b), ndtr(b) - ndtr(a))
    return -torch.log(p)


def quantize_images(x: Tensor) -> Tensor:
    """Data in [−1, 1]-ish -> 8-bit images in [0, 1] (k/255)."""
    return torch.round(((x + 1) / 2).clamp(0, 1) * 255) / 255


class LinearOracle:
    """x̂_0 = m + k_t (x_t − α_t m), k_t = α_t s²/(α_t² s² + σ_t²): E[x_0 | x_t] for data N(m, s² I), with α_t, σ_t
    from ᾱ computed here. Deterministic in x_t, so every expectation over x_t below is a Gaussian integral."""

    def __init__(self, ab: Tensor, m: float, s: float) -> None:
        self.ab, self.m, self.s = ab, m, s

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        alpha, sigma = self.ab[t].sqrt(), (1 - self.ab[t]).sqrt()
        return alpha, sigma, alpha * self.s**2 / (alpha**2 * self.s**2 + sigma**2)

    def x0(self, x_t: Tensor, t: Tensor) -> Tensor:
        alpha, _, k = (c.view(-1, *[1] * (x_t.ndim - 1)).to(x_t.dtype) for c in self.coefficients(t))
        return self.m + k * (x_t - alpha * self.m)

    def __call__(self, x_t: Tensor, t: Tensor) -> Prediction:
        alpha, sigma, _ = (c.view(-1, *[1] * (x_t.ndim - 1)).to(x_t.dtype) for c in self.coefficients(t))
        x0 = self.x0(x_t, t)
        return Prediction(x0=x0, eps=(x_t - alpha * x0) / sigma)


class FunctionNet(nn.Module):
    """A 'network' out = fn(x_t, t) with the attributes GaussianDiffusion reads; records every input it sees."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], channels: int, learned_variance: bool = False) -> None:
        super().__init__()
        self.fn, self.channels, self.learned_variance, self.self_condition = fn, channels, learned_variance, False
        self.unused = nn.Parameter(torch.zeros(()))  # GaussianDiffusion.sample reads the dtype off a parameter
        self.seen: dict[int, Tensor] = {}

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.seen[int(t[0])] = x.clone()
        return self.fn(x, t)


# ----- 1. the variational bound with the default fixed_small variance ----------------------------------------


def expected_terms(
    ab: Tensor, x0: Tensor, x_t: dict[int, Tensor], x0_hat: Callable[[Tensor, int], Tensor], large: bool = False
) -> tuple[Tensor, Tensor]:
    """Per-sample nats summed over dims: (terms (B, T), prior (B,)) of the bound with Σ = β̃_t, or Σ = β_t =
    1 − ᾱ_t/ᾱ_{t−1} when ``large``; at t = 0 (the decoder) Σ = β̃_1 for both (improved-diffusion's convention for
    fixed_large), given the x_t the model saw. x0_hat(x_t, t) is the model's prediction as the bound uses it."""
    T = len(ab)
    terms = []
    for t in range(T):
        c0, ct, var = forward_conditional(1.0 if t == 0 else float(ab[t - 1]), float(ab[t]))
        model_mean = c0 * x0_hat(x_t[t], t) + ct * x_t[t]
        if t == 0:  # decoder: c_0 = 1, c_t = 0, variance clipped to β̃_1
            decoder_var = forward_conditional(float(ab[0]), float(ab[1]))[2]
            terms.append(decoder_nll(x0, model_mean, math.sqrt(decoder_var)).flatten(1).sum(1))
        else:
            model_var = 1 - float(ab[t]) / float(ab[t - 1]) if large else var
            terms.append(gaussian_kl(c0 * x0 + ct * x_t[t], var, model_mean, model_var).flatten(1).sum(1))
    a_last = float(ab[-1])
    prior = gaussian_kl(math.sqrt(a_last) * x0, 1 - a_last, torch.zeros_like(x0), 1.0).flatten(1).sum(1)
    return torch.stack(terms, 1), prior


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_vlb_terms_match_closed_forms_term_by_term(variance: str) -> None:
    """vlb_terms (the default variance fixed_small, or fixed_large; discretized decoder) against the terms computed
    here from the x_t the denoiser was given: each KL, the decoder and the prior in bits/dim (nats / (D ln 2)), to
    1e-9. The betas stop at ᾱ_{T−1} ≈ 0.28, so the prior term is large enough to check. The decoder's variance is
    β̃_1 ≈ 0.92e-4 for both (β_0 = 1e-4 is not it: the decoder term, checked to 1e-9, tells them apart)."""
    betas = torch.linspace(1e-4, 0.05, 50, dtype=F64)
    ab = alphabar(betas)
    g = torch.Generator().manual_seed(0)
    x0 = quantize_images(0.2 + 0.5 * torch.randn(64, 2, 1, 1, generator=g, dtype=F64)) * 2 - 1
    assert bool((x0 == 1).any() and (x0 == -1).any()), "both edge bins are exercised"
    oracle, seen = LinearOracle(ab, 0.2, 0.5), {}

    def recording(x_t: Tensor, t: Tensor) -> Prediction:
        seen[int(t[0])] = x_t.clone()
        return oracle(x_t, t)

    result = vlb_terms(
        recording, NoiseSchedule(betas), x0, variance=variance, generator=torch.Generator().manual_seed(1)
    )
    terms, prior = expected_terms(
        ab, x0, seen, lambda x, t: oracle.x0(x, torch.tensor([t])), large=variance == "fixed_large"
    )
    D = x0[0].numel()
    torch.testing.assert_close(result.terms, terms / (D * LN2), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(result.prior, prior / (D * LN2), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(result.total, (terms.sum(1) + prior) / (D * LN2), rtol=1e-9, atol=1e-12)
    assert float(result.prior.mean()) > 0.05 and float(result.terms[:, 0].mean()) > 0.5


def test_vlb_terms_kl_expectations_over_the_forward_draws() -> None:
    """The x_t behind each term must be a draw of q(x_t | x_0). With Σ = β̃ the KL is 0.5 c_0² (x_0 − x̂_0)²/β̃ per
    dim, and x_0 − x̂_0 = (1 − k α)(x_0 − m) − k σ ε is Gaussian in ε, so the term's mean and variance over the draws
    are closed forms: per dim E = A (a² + b²), Var = A² (4a²b² + 2b⁴). Each t's batch mean is checked within 5 of
    its exact standard errors (N = 2000 samples of 2 dims: about 2% of the term)."""
    betas = torch.linspace(1e-4, 0.05, 50, dtype=F64)
    ab = alphabar(betas)
    m, s = 0.2, 0.5
    x0 = quantize_images(m + s * torch.randn(2000, 2, 1, 1, generator=torch.Generator().manual_seed(2), dtype=F64))
    x0 = x0 * 2 - 1
    result = vlb_terms(LinearOracle(ab, m, s), NoiseSchedule(betas), x0, generator=torch.Generator().manual_seed(3))
    D, N = x0[0].numel(), x0.shape[0]
    for t in range(1, len(ab)):
        c0, _, var = forward_conditional(float(ab[t - 1]), float(ab[t]))
        alpha, sigma = math.sqrt(float(ab[t])), math.sqrt(1 - float(ab[t]))
        k = alpha * s**2 / (alpha**2 * s**2 + sigma**2)
        a, b = (1 - k * alpha) * (x0 - m), -k * sigma
        scale = 0.5 * c0**2 / var / (D * LN2)  # bits/dim per unit squared error, per dim
        mean = (scale * (a**2 + b**2)).flatten(1).sum(1).mean()
        standard_error = float((scale**2 * (4 * a**2 * b**2 + 2 * b**4)).sum()) ** 0.5 / N
        got = float(result.terms[:, t].mean())
        assert abs(got - float(mean)) < 5 * standard_error, (t, got, float(mean), standard_error)


def test_bits_per_dim_default_gaussian_diffusion_end_to_end() -> None:
    """bits_per_dim(diffusion, images in [0, 1]) with every default that matters (cosine, fixed_small, clip_denoised,
    auto_normalize) against the bound computed here: images -> 2·images − 1, x̂_0 = clamp(oracle, −1, 1), each term
    from the x_t the network saw, total = Σ nats / (D ln 2). A missing normalization, a lost ln 2 or D, a wrong
    variance or posterior coefficient each move it by far more than the tolerance."""
    T, m, s = 50, 0.0, 0.6
    ab = alphabar(NoiseSchedule.from_name("cosine", T).betas)  # the default schedule's betas, ᾱ recomputed here
    oracle = LinearOracle(ab, m, s)
    net = FunctionNet(lambda x, t: oracle.x0(x, t), channels=2)
    diffusion = GaussianDiffusion(net, image_size=1, timesteps=T, objective="pred_x0").double()
    assert diffusion.variance_type.value == "fixed_small" and diffusion.clip_denoised and diffusion.auto_normalize
    images = quantize_images(m + s * torch.randn(200, 2, 1, 1, generator=torch.Generator().manual_seed(4), dtype=F64))
    bpd = bits_per_dim(diffusion, images, generator=torch.Generator().manual_seed(5))
    x0 = images * 2 - 1
    clipped = [(oracle.x0(net.seen[t], torch.tensor([t])).abs() > 1).any() for t in range(T)]
    assert any(clipped), "the clamp of x̂_0 is exercised"
    terms, prior = expected_terms(ab, x0, net.seen, lambda x, t: oracle.x0(x, torch.tensor([t])).clamp(-1, 1))
    expected = (terms.sum(1) + prior) / (x0[0].numel() * LN2)
    torch.testing.assert_close(bpd, expected, rtol=1e-6, atol=1e-6)


# ----- 2. q_posterior and the learned-variance term --------------------------------------------------------------


class Inert(nn.Module):
    channels, self_condition, learned_variance = 2, False, True

    def forward(self, x: Tensor, t: Tensor) -> Tensor:  # pragma: no cover - never called here
        raise AssertionError


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_q_posterior_equals_gaussian_conditioning_of_the_forward_process(schedule: str) -> None:
    """GaussianDiffusion.q_posterior for a batch mixing t = 0, 1, inner and T − 1 (one row each) against
    forward_conditional; at t = 0 the posterior is the point x_0 (variance 0) and the log variance is clipped to
    log β̃_1."""
    T = 100
    d = GaussianDiffusion(Inert(), image_size=3, timesteps=T, beta_schedule=schedule)
    ab = alphabar(d.schedule.betas)
    t = torch.tensor([0, 1, 2, 37, 71, T - 2, T - 1])
    g = torch.Generator().manual_seed(6)
    x0, x_t = torch.randn(len(t), 2, 3, 3, generator=g), torch.randn(len(t), 2, 3, 3, generator=g)
    mean, var, log_var = d.q_posterior(x0, x_t, t)
    clipped_var_0 = forward_conditional(float(ab[0]), float(ab[1]))[2]
    for row, ti in enumerate(t.tolist()):
        c0, ct, v = forward_conditional(1.0 if ti == 0 else float(ab[ti - 1]), float(ab[ti]))
        want = (c0 * x0[row].double() + ct * x_t[row].double()).float()
        torch.testing.assert_close(mean[row], want, rtol=1e-5, atol=1e-6)
        assert float(var[row].flatten()[0]) == pytest.approx(v, rel=1e-5, abs=1e-12), ti
        log_want = math.log(clipped_var_0 if ti == 0 else v)
        assert float(log_var[row].flatten()[0]) == pytest.approx(log_want, rel=1e-5, abs=1e-5), ti
    assert float(var[0].max()) == 0.0 and torch.equal(mean[0], x0[0])


def test_learned_range_vlb_term_against_torch_distributions() -> None:
    """vlb_term with var_interp v anywhere in [−1, 1] (per element): for t > 0 the KL from torch.distributions between
    N(μ̃(x_0), β̃_t) and N(μ̃(x̂_0), exp(v' log β_t + (1 − v') log β̃_t)), v' = (v + 1)/2 (Nichol & Dhariwal 2021,
    eq. 15); at t = 0 the discretized decoder with log Σ = v' log β_0 + (1 − v') log β̃_1. Mean over dims / ln 2."""
    T = 50
    d = GaussianDiffusion(Inert(), image_size=2, timesteps=T, beta_schedule="cosine")
    betas = d.schedule.betas
    ab = alphabar(betas)
    g = torch.Generator().manual_seed(7)
    t = torch.tensor([0, 0, 1, 2, 9, 30, T - 1])
    B = len(t)
    x0 = quantize_images(0.4 * torch.randn(B, 2, 2, 2, generator=g)) * 2 - 1
    x_t = torch.randn(B, 2, 2, 2, generator=g)
    pred_x0 = (x0 + 0.05 * torch.randn(B, 2, 2, 2, generator=g)).clamp(-1, 1)
    v = torch.rand(B, 2, 2, 2, generator=g) * 2 - 1
    v[:, 0, 0, 0], v[:, 0, 0, 1] = -1.0, 1.0  # both endpoints, in every row
    got = d.vlb_term(x0, x_t, t, pred_x0, v)
    for row, ti in enumerate(t.tolist()):
        c0, ct, var = forward_conditional(1.0 if ti == 0 else float(ab[ti - 1]), float(ab[ti]))
        small = forward_conditional(float(ab[0]), float(ab[1]))[2] if ti == 0 else var
        frac = (v[row].double() + 1) / 2
        model_std = torch.exp(0.5 * (frac * math.log(float(betas[ti])) + (1 - frac) * math.log(small)))
        model_mean = c0 * pred_x0[row].double() + ct * x_t[row].double()
        if ti == 0:
            nats = decoder_nll(x0[row].double(), model_mean, model_std)
        else:
            q = torch.distributions.Normal(c0 * x0[row].double() + ct * x_t[row].double(), math.sqrt(var))
            nats = torch.distributions.kl_divergence(q, torch.distributions.Normal(model_mean, model_std))
        assert float(got[row]) == pytest.approx(float(nats.mean()) / LN2, rel=2e-4, abs=1e-5), (ti, float(got[row]))


# ----- 3. DDPM with the learned-range variance -------------------------------------------------------------------


def step_log_variance(frac: Tensor, ab_s: float, ab_t: float) -> Tensor:
    """log Σ of the step t → s for v' = frac: v' log β' + (1 − v') log β̃', β' = 1 − ᾱ_t/ᾱ_s, β̃' the variance of
    q(x_s | x_t, x_0) from forward_conditional."""
    return frac * math.log(1 - ab_t / ab_s) + (1 - frac) * math.log(forward_conditional(ab_s, ab_t)[2])


@pytest.mark.parametrize("schedule,t,s", [("linear", 1, 0), ("cosine", 100, 20), ("cosine", 600, 300)])
@pytest.mark.parametrize(
    "v", [(-1.0, -1.0), (1.0, 1.0), (-1.0, 1.0), (0.3, -0.6)], ids=["small", "large", "both", "inner"]
)
def test_ddpm_learned_range_one_step_spread(schedule: str, t: int, s: int, v: tuple[float, float]) -> None:
    """One DDPM step t → s (respaced when s < t − 1) from a fixed x_t with a denoiser returning a fixed x̂_0 and a
    fixed v per channel (both channels at one endpoint, one at each, or inside): the draws of x_s have mean
    c_0 x̂_0 + c_t x_t and per-channel std exp(0.5 log Σ(v')), i.e. √β̃' at v = −1 and √β' at v = +1. N = 20000
    draws per channel: the std's standard error is 1/√(2N) = 0.5%, checked within 2.5% (5 SE); the mean within
    5 std/√N. Here √β'/√β̃' is 1.5 to 4.7, far outside that."""
    N = 20000
    ab = alphabar(NoiseSchedule.from_name(schedule, 1000).betas)
    ab_t, ab_s = float(ab[t]), float(ab[s])
    x_t = torch.full((N, 2, 1, 1), 0.7, dtype=F64)
    x0_hat = torch.tensor([0.3, -0.5], dtype=F64).view(1, 2, 1, 1).expand(N, 2, 1, 1)
    var_interp = torch.tensor(v, dtype=F64).view(1, 2, 1, 1).expand(N, 2, 1, 1)

    def denoiser(x: Tensor, time: Tensor) -> Prediction:
        a, sg = math.sqrt(float(ab[int(time[0])])), math.sqrt(1 - float(ab[int(time[0])]))
        return Prediction(x0=x0_hat, eps=(x - a * x0_hat) / sg, var_interp=var_interp)

    records = []
    sample_ddpm(
        denoiser,
        x_t,
        NoiseSchedule.from_name(schedule, 1000),
        [t, s],
        variance="learned_range",
        generator=torch.Generator().manual_seed(8),
        callback=records.append,
    )
    x_s = records[0].x_next[:, :, 0, 0]
    c0, ct, _ = forward_conditional(ab_s, ab_t)
    std = torch.exp(0.5 * step_log_variance((torch.tensor(v, dtype=F64) + 1) / 2, ab_s, ab_t))
    mean = c0 * x0_hat[0, :, 0, 0] + ct * 0.7
    assert ((x_s.mean(0) - mean).abs() < 5 * std / math.sqrt(N)).all(), (x_s.mean(0), mean)
    rel = x_s.std(0) / std - 1
    assert (rel.abs() < 5 / math.sqrt(2 * N)).all(), (x_s.std(0), std)


def test_gaussian_diffusion_samples_with_the_learned_variance() -> None:
    """GaussianDiffusion(variance_type=None -> 'learned_range') with a learned_variance network (x̂_0 and v
    channels): every noisy DDPM step of sample() spreads around c_0 x̂_0 + c_t x_t with the std v implies, on the
    respaced 3-step chain 49 → 24 → 0. N = 20000 per channel, tolerance 5 SE of the std (2.5%)."""
    T, N = 50, 20000
    ab = alphabar(NoiseSchedule.from_name("cosine", T).betas)
    x0_hat, v = torch.tensor([0.3, -0.5]).view(1, 2, 1, 1), torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1)
    net = FunctionNet(
        lambda x, t: torch.cat([x0_hat, v], 1).expand(x.shape[0], 4, 1, 1), channels=2, learned_variance=True
    )
    d = GaussianDiffusion(net, image_size=1, timesteps=T, objective="pred_x0").double()
    assert d.variance_type.value == "learned_range"
    records = []
    d.sample(N, sampler="ddpm", steps=3, generator=torch.Generator().manual_seed(9), callback=records.append)
    assert [r.t for r in records] == [49, 24, 0]
    for record, s in zip(records[:2], (24, 0)):
        c0, ct, _ = forward_conditional(float(ab[s]), float(ab[record.t]))
        residual = (record.x_next - c0 * x0_hat.double() - ct * record.x_t)[:, :, 0, 0]
        std = torch.exp(0.5 * step_log_variance((v.double().flatten() + 1) / 2, float(ab[s]), float(ab[record.t])))
        assert (residual.mean(0).abs() < 5 * std / math.sqrt(N)).all(), (record.t, residual.mean(0))
        assert ((residual.std(0) / std - 1).abs() < 5 / math.sqrt(2 * N)).all(), (record.t, residual.std(0), std)


# ----- 4. the default sampling path: clip x̂_0, then recompute ε̂ from it -----------------------------------------


@pytest.mark.parametrize("rederive_eps", [True, False])
@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_ddim_step_with_clipping_recomputes_eps_from_the_clamped_x0(objective: str, rederive_eps: bool) -> None:
    """diffusion.sample(sampler='ddim', eta=0) with the default clip_denoised=True and a network whose x̂_0 = 3 x_t
    (in its objective's parameterization) falls both inside and outside [−1, 1] at every step: each step's output
    is α_s clamp(x̂_0) + σ_s ε̂ with ε̂ = (x_t − α_t clamp(x̂_0))/σ_t (the default rederive_eps=True), or with the
    network's own ε̂ = (x_t − α_t x̂_0)/σ_t (rederive_eps=False: diffusers' DDIMScheduler), α, σ from ᾱ computed
    here. The other of the two, or not clamping, lands far outside the tolerance (checked below, so that the case
    stays sharp)."""
    T = 50
    ab = alphabar(NoiseSchedule.from_name("cosine", T).betas)

    def path(t: Tensor) -> tuple[Tensor, Tensor]:
        return ab[t].sqrt().view(-1, 1, 1, 1), (1 - ab[t]).sqrt().view(-1, 1, 1, 1)

    def output(x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = path(t)
        x0 = 3.0 * x
        eps = (x - alpha * x0) / sigma
        return {"pred_x0": x0, "pred_noise": eps, "pred_v": alpha * eps - sigma * x0}[objective]

    d = GaussianDiffusion(
        FunctionNet(output, channels=2), image_size=1, timesteps=T, objective=objective, rederive_eps=rederive_eps
    ).double()
    records = []
    out = d.sample(64, sampler="ddim", steps=5, generator=torch.Generator().manual_seed(10), callback=records.append)
    targets = [r.t for r in records[1:]] + [-1]
    for record, s in zip(records, targets):
        (a_t, sg_t), x_t = path(torch.tensor([record.t])), record.x_t
        a_s, sg_s = (1.0, 0.0) if s < 0 else (math.sqrt(float(ab[s])), math.sqrt(1 - float(ab[s])))
        x0_raw = 3.0 * x_t
        eps_raw = (x_t - a_t * x0_raw) / sg_t
        assert bool((x0_raw.abs() > 1.05).any() and (x0_raw.abs() < 0.95).any()), "clipping is active, not total"
        x0 = x0_raw.clamp(-1, 1)
        eps = (x_t - a_t * x0) / sg_t
        want, other = a_s * x0 + sg_s * eps, a_s * x0 + sg_s * eps_raw
        if not rederive_eps:
            want, other = other, want
        torch.testing.assert_close(record.pred_x0, x0, rtol=2e-5, atol=2e-5)  # float32 buffers
        torch.testing.assert_close(record.x_next, want, rtol=2e-5, atol=2e-5)
        if s >= 0:
            for wrong in (other, a_s * x0_raw + sg_s * eps_raw):
                assert float((wrong - want).abs().max()) > 1e-3  # 50x the tolerance
    torch.testing.assert_close(out, (records[-1].x_next + 1) / 2)


@pytest.mark.parametrize(
    ("sampler", "reads_eps"),
    [("ddim", True), ("heun", True), ("euler", True), ("ddpm", False), ("dpmpp_2m", False), ("dpmpp_2m_sde", False)],
)
def test_rederive_eps_reaches_exactly_the_samplers_that_read_eps(sampler: str, reads_eps: bool) -> None:
    """The docstring of GaussianDiffusion: rederive_eps changes the samples of the samplers that step with ε̂ and
    not those that read x̂_0 alone (DDPM's posterior mean, DPM-Solver++'s data prediction). Same network (x̂_0 = 3 x_t,
    so the clamp bites), same generator, the flag flipped."""

    def output(x: Tensor, t: Tensor) -> Tensor:
        ab = d.schedule.alphas_cumprod[t].view(-1, 1, 1, 1).to(x.dtype)
        return (x - ab.sqrt() * 3.0 * x) / (1 - ab).sqrt()  # ε̂ of x̂_0 = 3 x_t

    states = []  # every step's output: the final sample alone is x̂_0 clamped, often ±1 for either flag
    for rederive_eps in (True, False):
        d = GaussianDiffusion(FunctionNet(output, channels=2), image_size=1, timesteps=50, rederive_eps=rederive_eps)
        records: list = []
        d.double().sample(
            64, sampler=sampler, steps=5, generator=torch.Generator().manual_seed(3), callback=records.append
        )
        states.append(torch.stack([r.x_next for r in records]))
    gap = float((states[0] - states[1]).abs().max())
    assert gap > 1e-3 if reads_eps else gap == 0.0, gap


# ----- 5. DPM-Solver++(2M) on non-uniform grids --------------------------------------------------------------------


def dpmpp_2m_reference(
    oracle: LinearOracle,
    ab: Tensor,
    timesteps: list[int],
    x: Tensor,
    ratio: Callable[[float, float], float] = lambda h_prev, h: h_prev / h,
) -> list[Tensor]:
    """Lu et al. 2022, Alg. 2, written out: λ = log(α/σ), h = λ_s − λ_t, r = h_prev/h,
    D̃ = (1 + 1/(2r)) D_t − 1/(2r) D_prev (D̃ = D_t on the first step), x_s = (σ_s/σ_t) x_t − α_s (e^{−h} − 1) D̃;
    the step into clean data returns D_t. Returns the state at every visited index, then the output.
    ``ratio`` lets the test build the wrong variants it must tell apart."""
    states, d_prev, h_prev = [x], None, None
    for i, t in enumerate(timesteps):
        d = oracle.x0(x, torch.tensor([t]))
        if i + 1 == len(timesteps):
            states.append(d)
            break
        s = timesteps[i + 1]
        a_t, sg_t, a_s, sg_s = (
            math.sqrt(float(ab[u])) if k == 0 else math.sqrt(1 - float(ab[u])) for u in (t, s) for k in (0, 1)
        )
        h = math.log(a_s / sg_s) - math.log(a_t / sg_t)
        if d_prev is None:
            d_tilde = d
        else:
            r = ratio(h_prev, h)
            d_tilde = (1 + 1 / (2 * r)) * d - 1 / (2 * r) * d_prev
        x = (sg_s / sg_t) * x - a_s * (math.exp(-h) - 1) * d_tilde
        states.append(x)
        d_prev, h_prev = d, h
    return states


@pytest.mark.parametrize(
    "timesteps",
    [
        [999, 990, 700, 690, 400, 395, 150, 145, 40, 38, 5, 0],  # alternating long and short steps
        [999, 900, 600, 400, 250, 150, 90, 50, 25, 12, 5, 2, 0],  # geometric-ish, h changes steadily
    ],
    ids=["alternating", "geometric"],
)
def test_dpmpp_2m_follows_algorithm_2_on_a_non_uniform_grid(timesteps: list[int]) -> None:
    """Every state of sample_dpmpp_2m with the Gaussian oracle equals dpmpp_2m_reference's to 1e-10 (float64). The
    step-size ratio matters here: with r inverted or set to 1 the reference moves by > 1e-3, checked below."""
    schedule = NoiseSchedule.from_name("linear", 1000)
    ab = alphabar(schedule.betas)
    oracle = LinearOracle(ab, 0.5, 0.4)
    x_T = torch.randn(100, 2, 1, 1, generator=torch.Generator().manual_seed(11), dtype=F64)
    records = []
    out = sample_dpmpp_2m(oracle, x_T, schedule, timesteps, callback=records.append)
    want = dpmpp_2m_reference(oracle, ab, timesteps, x_T)
    got = [r.x_t for r in records] + [out]
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"state {i}")
    for wrong in (lambda h_prev, h: h / h_prev, lambda h_prev, h: 1.0):
        assert float((dpmpp_2m_reference(oracle, ab, timesteps, x_T, wrong)[-2] - want[-2]).abs().max()) > 1e-3


def exact_lambda_schedule(lams: Tensor) -> NoiseSchedule:
    """A schedule whose index t sits exactly at log-SNR lams[t] (lams decreasing in t): ᾱ_t = sigmoid(2 λ_t)."""
    ab = torch.sigmoid(2 * lams)
    return NoiseSchedule(1 - ab / torch.cat([torch.ones(1, dtype=F64), ab[:-1]]))


def test_dpmpp_2m_is_second_order_on_an_alternating_grid() -> None:
    """h alternating between w and 4w on λ ∈ [−4, 4] (each grid an exact schedule, no rounding to indices): the error
    at the last visited index against the exact probability-flow ODE solution for N(m, s²) data,
    x = α (m + √((s² + σ̃²)/(s² + σ̃_T²)) (x_T/α_T − m)), falls 3.6x from 40 to 80 steps (> 3 asserted). With
    r fixed to 1 the method is first order on this grid (1.9x); with r inverted it stays second order (the error
    terms (h_prev² − h²) D'/2 telescope), which only the Algorithm-2 test above can see."""
    m, s = 0.5, 0.4
    x_T = torch.randn(200, 2, 1, 1, generator=torch.Generator().manual_seed(12), dtype=F64)
    errors = []
    for steps in (40, 80):
        widths = torch.tensor([1.0 if i % 2 == 0 else 4.0 for i in range(steps)], dtype=F64)
        lams = 4.0 - 8.0 * torch.cat([torch.zeros(1, dtype=F64), widths.cumsum(0) / widths.sum()])  # t = 0 at λ = 4
        schedule = exact_lambda_schedule(lams)
        ab = alphabar(schedule.betas)
        records = []
        sample_dpmpp_2m(LinearOracle(ab, m, s), x_T, schedule, list(range(steps, -1, -1)), callback=records.append)
        (a_T, sg_T), (a_0, sg_0) = ((math.sqrt(float(ab[u])), math.sqrt(1 - float(ab[u]))) for u in (steps, 0))
        exact = a_0 * (m + math.sqrt((s * s + (sg_0 / a_0) ** 2) / (s * s + (sg_T / a_T) ** 2)) * (x_T / a_T - m))
        errors.append(float((records[-1].x_t - exact).abs().mean()))  # the state at t = 0
    assert errors[0] / errors[1] > 3.0, errors


# ----- 6. the range of samples with and without auto_normalize --------------------------------------------------


@pytest.mark.parametrize(
    "auto_normalize,clip_denoised,expected",
    [
        (True, True, [1.0, 0.0, 0.75]),  # clamp(x̂_0) = (1, −1, 0.5) -> [0, 1] images
        (True, False, [1.0, 0.0, 0.75]),  # (3, −3, 0.5) -> (2, −1, 0.75) -> clamped to [0, 1]
        (False, True, [1.0, -1.0, 0.5]),  # the data's own range [−1, 1], clamped there
        (False, False, [3.0, -3.0, 0.5]),  # nothing clamps: a latent model's samples come back as they are
    ],
)
def test_sample_range_follows_auto_normalize_and_clip_denoised(
    auto_normalize: bool, clip_denoised: bool, expected: list[float]
) -> None:
    """A network predicting x̂_0 = (3, −3, 0.5) per channel: DDIM's last step returns x̂_0 (clamped when
    clip_denoised), so the sample is exactly ``expected``; the trajectory (x_T first) is the callback's states
    mapped the same way: unnormalized and clamped to [0, 1], else clamped to [−1, 1] only when clip_denoised."""
    x0 = torch.tensor([3.0, -3.0, 0.5]).view(1, 3, 1, 1)
    d = GaussianDiffusion(
        FunctionNet(lambda x, t: x0.expand(x.shape[0], 3, 1, 1), channels=3),
        image_size=1,
        timesteps=20,
        objective="pred_x0",
        auto_normalize=auto_normalize,
        clip_denoised=clip_denoised,
    )
    out = d.sample(8, sampler="ddim", steps=4, generator=torch.Generator().manual_seed(13))
    torch.testing.assert_close(out, torch.tensor(expected).view(1, 3, 1, 1).expand(8, 3, 1, 1))
    records = []
    trajectory = d.sample(
        8,
        sampler="ddim",
        steps=4,
        generator=torch.Generator().manual_seed(13),
        return_all_timesteps=True,
        callback=records.append,
    )
    states = torch.stack([records[0].x_t] + [r.x_next for r in records], dim=1)
    assert float(states.abs().max()) > 2.0, "raw states leave every range"
    if auto_normalize:
        want = ((states + 1) / 2).clamp(0, 1)
    else:
        want = states.clamp(-1, 1) if clip_denoised else states
    torch.testing.assert_close(trajectory, want)
    torch.testing.assert_close(trajectory[:, -1], out)


# ----- 7. the training loss: L_simple, min-SNR and the hybrid loss ------------------------------------------------


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
@pytest.mark.parametrize("loss_type", ["l2", "l1", "huber"])
@pytest.mark.parametrize("min_snr", [False, True], ids=["plain", "min_snr"])
def test_p_losses_closed_form(objective: str, loss_type: str, min_snr: bool) -> None:
    """p_losses for a network whose output is 2 x_t + 0.1 (any t), against the loss written out here: x_t = √ᾱ_t x_0 +
    √(1 − ᾱ_t) ε; the target ε, x_0 or v = √ᾱ_t ε − √(1 − ᾱ_t) x_0 (Salimans & Ho 2022); the per-sample mean over
    dims of (out − target)², |out − target| or Huber (δ = 1) (Ho et al. 2020, eq. 14); with min-SNR-γ (γ = 2) times
    min(SNR, γ)/SNR, min(SNR, γ) or min(SNR, γ)/(SNR + 1) by objective (Hang et al. 2023, eq. 9)."""
    T, gamma = 50, 2.0
    ab = alphabar(NoiseSchedule.from_name("cosine", T).betas)
    d = GaussianDiffusion(
        FunctionNet(lambda x, t: 2.0 * x + 0.1, channels=2),
        image_size=3,
        timesteps=T,
        objective=objective,
        loss_type=loss_type,
        min_snr_loss_weight=min_snr,
        min_snr_gamma=gamma,
    ).double()
    g = torch.Generator().manual_seed(14)
    t = torch.tensor([0, 1, 10, 25, 40, 48, 49])
    x0 = torch.randn(len(t), 2, 3, 3, generator=g, dtype=F64)
    noise = torch.randn(len(t), 2, 3, 3, generator=g, dtype=F64)
    got = d.p_losses(x0, t, noise)
    alpha, sigma = ab[t].sqrt().view(-1, 1, 1, 1), (1 - ab[t]).sqrt().view(-1, 1, 1, 1)
    x_t = alpha * x0 + sigma * noise
    target = {"pred_noise": noise, "pred_x0": x0, "pred_v": alpha * noise - sigma * x0}[objective]
    err = (2.0 * x_t + 0.1 - target).abs()
    elementwise = {"l2": err**2, "l1": err, "huber": torch.where(err < 1, 0.5 * err**2, err - 0.5)}[loss_type]
    want = elementwise.flatten(1).mean(1)
    if min_snr:
        snr = ab[t] / (1 - ab[t])
        want = want * snr.clamp(max=gamma) / {"pred_noise": snr, "pred_x0": 1.0, "pred_v": snr + 1}[objective]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0"])
def test_hybrid_loss_closed_form(objective: str) -> None:
    """With a learned-variance network (prediction channels, then v): p_losses = L_simple + λ T L_t (Nichol &
    Dhariwal 2021, eq. 16, λ = vlb_weight = 0.001), L_t in bits per dimension: the KL from q(x_{t−1} | x_t, x_0) to
    N(c_0 x̂_0 + c_t x_t, exp(v' log β_t + (1 − v') log β̃_t)), v' = (v + 1)/2, for t > 0, and the discretized
    decoder's −log p(x_0) at t = 0 (log β̃ clipped to log β̃_1 there). Everything from ᾱ computed here."""
    T = 50
    betas = NoiseSchedule.from_name("cosine", T).betas
    ab = alphabar(betas)
    g = torch.Generator().manual_seed(15)
    t = torch.tensor([0, 0, 1, 9, 30, 49])
    x0 = quantize_images(0.4 * torch.randn(len(t), 2, 2, 2, generator=g, dtype=F64)) * 2 - 1
    noise = torch.randn(len(t), 2, 2, 2, generator=g, dtype=F64)
    v = torch.rand(len(t), 2, 2, 2, generator=g, dtype=F64) * 2 - 1
    miss = 0.02 * torch.randn(len(t), 2, 2, 2, generator=g, dtype=F64)  # x̂_0 = x_0 + miss: a finite decoder NLL
    a_t, s_t = ab[t].sqrt().view(-1, 1, 1, 1), (1 - ab[t]).sqrt().view(-1, 1, 1, 1)
    pred = x0 + miss if objective == "pred_x0" else noise - a_t * miss / s_t
    net = FunctionNet(lambda x, time: torch.cat([pred, v], 1), channels=2, learned_variance=True)
    d = GaussianDiffusion(net, image_size=2, timesteps=T, objective=objective).double()
    got = d.p_losses(x0, t, noise)
    small_0 = forward_conditional(float(ab[0]), float(ab[1]))[2]
    for row, ti in enumerate(t.tolist()):
        a, sg = math.sqrt(float(ab[ti])), math.sqrt(1 - float(ab[ti]))
        x_t = a * x0[row] + sg * noise[row]
        x0_hat = pred[row] if objective == "pred_x0" else (x_t - sg * pred[row]) / a
        simple = float(((pred[row] - (x0[row] if objective == "pred_x0" else noise[row])) ** 2).mean())
        c0, ct, var = forward_conditional(1.0 if ti == 0 else float(ab[ti - 1]), float(ab[ti]))
        frac = (v[row] + 1) / 2
        model_var = torch.exp(frac * math.log(float(betas[ti])) + (1 - frac) * math.log(small_0 if ti == 0 else var))
        model_mean = c0 * x0_hat + ct * x_t
        if ti == 0:
            nats = decoder_nll(x0[row], model_mean, model_var.sqrt())
        else:
            nats = gaussian_kl(c0 * x0[row] + ct * x_t, var, model_mean, model_var)
        want = simple + 0.001 * T * float(nats.mean()) / LN2
        assert float(got[row]) == pytest.approx(want, rel=1e-5), (ti, float(got[row]), want)


def test_hybrid_loss_gradient_reaches_the_mean_only_through_l_simple() -> None:
    """Nichol & Dhariwal 2021, §3.1: L_vlb trains only the variance (a stop-gradient on the mean), so the gradient
    of p_losses with respect to the ε-prediction channels is that of L_simple alone, 2 (out − ε)/D, while the v
    channels get a non-zero gradient (from L_vlb)."""
    T, B = 50, 6
    g = torch.Generator().manual_seed(16)
    out = torch.cat(
        [torch.randn(B, 2, 2, 2, generator=g, dtype=F64), torch.rand(B, 2, 2, 2, generator=g, dtype=F64) * 2 - 1], 1
    ).requires_grad_(True)
    net = FunctionNet(lambda x, time: out, channels=2, learned_variance=True)
    d = GaussianDiffusion(net, image_size=2, timesteps=T).double()
    x0 = quantize_images(0.4 * torch.randn(B, 2, 2, 2, generator=g, dtype=F64)) * 2 - 1
    noise = torch.randn(B, 2, 2, 2, generator=g, dtype=F64)
    d.p_losses(x0, torch.tensor([0, 1, 5, 20, 40, 49]), noise).sum().backward()
    D = 2 * 2 * 2
    torch.testing.assert_close(out.grad[:, :2], 2 * (out[:, :2].detach() - noise) / D, rtol=1e-10, atol=1e-12)
    assert bool((out.grad[:, 2:].abs().flatten(1).sum(1) > 0).all())
