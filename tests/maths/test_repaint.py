"""RePaint (samplers/repaint.py) against closed forms: its schedule of moves written out by hand, the forward jump
q(x_t | x_s) from the betas, and the sampler driven by the exact denoiser of a correlated Gaussian.

For Gaussian data x_0 ~ N(μ, Σ) every move of RePaint is affine in the state plus independent Gaussian noise (the
ideal denoiser E[x_0 | x_t] = μ + α Σ (α² Σ + σ² I)⁻¹ (x_t − α μ) is linear), so the distribution of its output is
Gaussian with a mean and covariance that :func:`exact_moments` propagates move by move, from Alg. 1 of Lugmayr et al.
2022 written out with matrices and the betas alone. Two closed forms follow:

* the sampler's samples must have those moments (within sampling error): any slip in a coefficient, a variance, an
  index or the noise shows here, even where it would hide inside RePaint's own approximation error;
* RePaint approximates the Gaussian conditional p(x_U | x_K = y) (Schur complement), and resampling brings it
  closer: measured on the data below, in moments (no sampling noise).
"""

from __future__ import annotations

import math

import pytest
import torch
from oracle import CorrelatedGaussian
from torch import Tensor

from denoising_diffusion.denoiser import Prediction
from denoising_diffusion.processes import CLEAN, NoiseSchedule, spaced_timesteps
from denoising_diffusion.samplers import repaint_schedule, sample_repaint
from denoising_diffusion.samplers.common import diffuse

F64 = torch.float64
RHO = 0.9
DATA = CorrelatedGaussian(
    mean=[0.3, -0.2, 0.1, 0.4], cov=[[0.25 * RHO ** abs(i - j) for j in range(4)] for i in range(4)], shape=(1, 2, 2)
)
KNOWN = [0, 3]  # the two corners (row-major) are kept; the other diagonal is filled in
VALUES = torch.tensor([0.9, -0.4], dtype=F64)  # away from the mean, so that conditioning moves the filled pixels


def known_image() -> tuple[Tensor, Tensor]:
    """(known (1, 1, 2, 2), mask (1, 1, 2, 2) bool): one image, broadcast over the batch by the sampler."""
    known = torch.zeros(4, dtype=F64)
    known[KNOWN] = VALUES
    mask = torch.zeros(4, dtype=torch.bool)
    mask[KNOWN] = True
    return known.view(1, 1, 2, 2), mask.view(1, 1, 2, 2)


def alphabar_from_betas(schedule: NoiseSchedule) -> dict[int, float]:
    """ᾱ_t = ∏_{u ≤ t} (1 − β_u) by a cumulative product of the betas, with ᾱ_{−1} = 1 (clean data)."""
    cumulative = torch.cumprod(1 - schedule.betas.to(F64), dim=0).tolist()
    return {-1: 1.0, **dict(enumerate(cumulative))}


def exact_moments(
    schedule: NoiseSchedule, timesteps: list[int], levels: list[int], variance: str = "fixed_small"
) -> tuple[Tensor, Tensor]:
    """Mean (4,) and covariance (4, 4) of RePaint's output for DATA with KNOWN = VALUES, from x_T ~ N(0, I).

    Alg. 1 of Lugmayr et al. 2022 on the chain ``timesteps`` (+ clean data), walked in ``levels``:
    * down t → s: x̂_0 = μ + G (x − α_t μ), G = α_t Σ (α_t² Σ + σ_t² I)⁻¹; unknown x_s = c_0 x̂_0 + c_t x + √v z with
      β' = 1 − ᾱ_t/ᾱ_s, c_0 = √ᾱ_s β'/(1 − ᾱ_t), c_t = √(1 − β') (1 − ᾱ_s)/(1 − ᾱ_t), v = β'(1 − ᾱ_s)/(1 − ᾱ_t)
      (fixed_small) or β' (fixed_large), none into clean data; known x_s = √ᾱ_s y + √(1 − ᾱ_s) ε.
    * up s → t: x_t = √(ᾱ_t/ᾱ_s) x_s + √(1 − ᾱ_t/ᾱ_s) z.
    With M_K the diagonal projection on the known elements, M_U = I − M_K, a down move is
    x ← M_U A x + M_U b + M_K √ᾱ_s y + noise of covariance v M_U + (1 − ᾱ_s) M_K, A = c_0 G + c_t I,
    b = c_0 (μ − α_t G μ); mean and covariance follow m ← A' m + b', P ← A' P A'ᵀ + Q.
    """
    ab = alphabar_from_betas(schedule)
    eye = torch.eye(4, dtype=F64)
    m_k = torch.diag(torch.tensor([1.0 if i in KNOWN else 0.0 for i in range(4)], dtype=F64))
    m_u = eye - m_k
    y = torch.zeros(4, dtype=F64)
    y[KNOWN] = VALUES
    chain = [*timesteps, CLEAN]
    n = len(timesteps)
    mean, cov = torch.zeros(4, dtype=F64), eye.clone()
    for here, there in zip(levels, levels[1:]):
        t, s = chain[n - 1 - here], chain[n - 1 - there]
        if there > here:
            q = ab[s] / ab[t]
            mean, cov = math.sqrt(q) * mean, q * cov + (1 - q) * eye
            continue
        alpha_t = math.sqrt(ab[t])
        gain = alpha_t * DATA.cov @ torch.linalg.inv(ab[t] * DATA.cov + (1 - ab[t]) * eye)
        beta = 1 - ab[t] / ab[s]
        c_0 = math.sqrt(ab[s]) * beta / (1 - ab[t])
        c_t = math.sqrt(1 - beta) * (1 - ab[s]) / (1 - ab[t])
        v = 0.0 if s == CLEAN else (beta * (1 - ab[s]) / (1 - ab[t]) if variance == "fixed_small" else beta)
        a = m_u @ (c_0 * gain + c_t * eye)
        b = m_u @ (c_0 * (DATA.mean - alpha_t * gain @ DATA.mean)) + math.sqrt(ab[s]) * m_k @ y
        mean, cov = a @ mean + b, a @ cov @ a.T + v * m_u + (1 - ab[s]) * m_k
    return mean, cov


def run_repaint(schedule: NoiseSchedule, timesteps: list[int], n: int, seed: int = 0, **options) -> Tensor:
    """RePaint's N outputs for DATA with KNOWN = VALUES, flattened to (N, 4), float64."""
    g = torch.Generator().manual_seed(seed)
    known, mask = known_image()
    x_T = torch.randn(n, 1, 2, 2, generator=g, dtype=F64)
    out = sample_repaint(
        DATA.denoiser(schedule), x_T, schedule, timesteps, known=known, mask=mask, generator=g, **options
    )
    return out.reshape(n, 4)


# ----- the schedule of moves ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        ((5, 2, 1), [4, 3, 2, 1, 0, -1]),
        # jump points 0 and 2 (below 5 − 2 = 3), one jump back each:
        ((5, 2, 2), [4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]),
        # one jump point, 0 (below 6 − 3 = 3): the whole chain above it is re-run once
        ((6, 3, 2), [5, 4, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, -1]),
        # jump points 0 and 3 (below 7 − 3 = 4)
        ((7, 3, 2), [6, 5, 4, 3, 4, 5, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, -1]),
        # j = 1, r = 3: every level below 3 is stepped onto three times, the chain's top never jumped to twice
        ((4, 1, 3), [3, 2, 3, 2, 3, 2, 1, 2, 1, 2, 1, 0, 1, 0, 1, 0, -1]),
        ((1, 1, 1), [0, -1]),
        ((3, 5, 1), [2, 1, 0, -1]),  # no resampling: any jump length
    ],
)
def test_schedule_written_out(args: tuple[int, int, int], expected: list[int]) -> None:
    """Hand-expanded walks: down a level is a reverse step, up a level a forward jump."""
    assert repaint_schedule(*args) == expected


@pytest.mark.parametrize("resample", [1, 2, 3, 10])
def test_schedule_counts_every_move(resample: int) -> None:
    """For every chain length n and jump length j < n, with P = ⌈(n − j)/j⌉ jump points (0, j, …): the walk starts
    at n − 1, ends with the single step 0 → −1, moves one level at a time, and steps down onto each level
    0 ≤ k < j·P exactly r times and onto each level above once; so it takes n + (r − 1)·j·P reverse steps and
    (r − 1)·j·P forward ones."""
    for n in range(1, 30):
        for j in range(1, n if resample > 1 else n + 3):
            levels = repaint_schedule(n, j, resample)
            points = math.ceil((n - j) / j) if resample > 1 else 0
            moves = list(zip(levels, levels[1:]))
            assert levels[0] == n - 1 and levels[-2:] == [0, -1] and levels.count(-1) == 1
            assert all(abs(b - a) == 1 for a, b in moves) and max(levels) == n - 1
            downs = [b for a, b in moves if b < a]
            assert len(downs) == n + (resample - 1) * j * points
            assert len(moves) - len(downs) == (resample - 1) * j * points
            for k in range(n - 1):
                assert downs.count(k) == (resample if k < j * points else 1), (n, j, k)


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 1, 1), "num_steps must be a positive integer"),
        ((5, 0, 1), "jump_length must be a positive integer"),
        ((5, 2, 0), "resample must be a positive integer"),
        ((5, 2.0, 2), "jump_length must be a positive integer"),
        ((5, True, 2), "jump_length must be a positive integer"),
        ((5, 5, 2), "jump_length=5 leaves no room to resample on a chain of 5 steps"),
    ],
)
def test_schedule_errors(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        repaint_schedule(*args)


# ----- the forward jump --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s, t", [(CLEAN, 0), (CLEAN, 999), (10, 11), (40, 700)])
def test_forward_jump_is_q_of_x_t_given_x_s(s: int, t: int) -> None:
    """diffuse(x_s, s, t) ~ N(√(ᾱ_t/ᾱ_s) x_s, (1 − ᾱ_t/ᾱ_s)), ᾱ from the betas; 5 standard errors, N = 40000."""
    schedule = NoiseSchedule.from_name("linear", 1000)
    ab = alphabar_from_betas(schedule)
    x_s = torch.tensor([-1.5, 0.0, 2.0], dtype=F64).view(1, 3, 1, 1).expand(40000, 3, 1, 1)
    x_t = diffuse(x_s, schedule, s, t, torch.Generator().manual_seed(0))
    ratio = ab[t] / ab[s]
    se_mean = math.sqrt((1 - ratio) / 40000)
    torch.testing.assert_close(x_t.mean(0), math.sqrt(ratio) * x_s[0], atol=5 * se_mean + 1e-12, rtol=0)
    var = x_t.var(0).flatten()
    assert ((var - (1 - ratio)).abs() <= 5 * (1 - ratio) * math.sqrt(2 / 40000)).all(), var


def test_forward_jump_refuses_a_backward_move() -> None:
    schedule = NoiseSchedule.from_name("linear", 100)
    for s, t in [(5, 5), (6, 5), (-2, 3), (3, 100)]:
        with pytest.raises(ValueError, match="a forward jump goes from s to t > s"):
            diffuse(torch.zeros(1, 1, 1, 1), schedule, s, t, None)


# ----- the sampler -------------------------------------------------------------------------------------------------


def linear_denoiser(schedule: NoiseSchedule):
    """Any denoiser will do for the contract tests: x̂_0 = 0.5 x_t."""

    def denoise(x_t: Tensor, t: Tensor) -> Prediction:
        alpha, sigma = schedule.alpha_sigma(t[0].item())
        x0 = 0.5 * x_t
        return Prediction(x0=x0, eps=(x_t - alpha * x0) / sigma)

    return denoise


@pytest.mark.parametrize("timesteps", [[19, 12, 6, 0], [15, 9, 3]])
@pytest.mark.parametrize("per_channel", [False, True])
def test_known_pixels_are_kept_exactly(timesteps: list[int], per_channel: bool) -> None:
    """The last step, into clean data, returns the known pixels themselves (also when the chain ends above t = 0),
    with a (B, 1, H, W) mask over all channels or a (B, C, H, W) one, bool or {0, 1}; the result keeps x_T's dtype
    and shape, and the same generator gives the same result."""
    schedule = NoiseSchedule.from_name("cosine", 20)
    g = torch.Generator().manual_seed(0)
    known = torch.rand(3, 3, 4, 4, generator=g) * 2 - 1
    mask = torch.rand(3, 3 if per_channel else 1, 4, 4, generator=g) < 0.5
    x_T = torch.randn(3, 3, 4, 4, generator=g)
    options = dict(known=known, jump_length=1, resample=3)
    runs = [
        sample_repaint(
            linear_denoiser(schedule),
            x_T,
            schedule,
            timesteps,
            mask=m,
            **options,
            generator=torch.Generator().manual_seed(1),
        )  # fmt: skip
        for m in (mask, mask.float())
    ]
    out = runs[0]
    assert out.shape == x_T.shape and out.dtype == x_T.dtype
    keep = mask.expand_as(out)
    assert torch.equal(out[keep], known[keep])
    assert not torch.equal(out[~keep], known[~keep])
    assert torch.equal(runs[0], runs[1])


def test_callback_once_per_reverse_step() -> None:
    """One StepRecord per network evaluation (each down move), numbered in order, with the move's start time; a
    jump back shows as the next record's x_t."""
    schedule = NoiseSchedule.from_name("linear", 30)
    timesteps = spaced_timesteps(30, 6)
    levels = repaint_schedule(6, 2, 3)
    chain = [*timesteps, CLEAN]
    expected_t = [chain[5 - a] for a, b in zip(levels, levels[1:]) if b < a]
    records = []
    known, mask = torch.zeros(2, 1, 3, 3), torch.rand(2, 1, 3, 3) < 0.5
    sample_repaint(linear_denoiser(schedule), torch.randn(2, 1, 3, 3), schedule, timesteps, known=known, mask=mask,
                   jump_length=2, resample=3, callback=records.append)  # fmt: skip
    assert [r.index for r in records] == list(range(len(expected_t)))
    assert [r.t for r in records] == expected_t
    jumped = [b > a for a, b in zip(expected_t, expected_t[1:])]
    assert any(jumped)
    for i, jump in enumerate(jumped):
        assert torch.equal(records[i].x_next, records[i + 1].x_t) is not jump


@pytest.mark.parametrize(
    "known, mask, message",
    [
        (torch.zeros(2, 1, 3, 3), torch.full((2, 1, 3, 3), 0.5), "mask must hold only 0 .fill. and 1 .keep."),
        (torch.zeros(2, 1, 3, 3), torch.ones(2, 1, 3, 4), "mask of shape \\(2, 1, 3, 4\\) does not broadcast"),
        (torch.zeros(3, 1, 3, 3), torch.ones(2, 1, 3, 3), "known of shape \\(3, 1, 3, 3\\) does not broadcast"),
        ([0.0], torch.ones(2, 1, 3, 3), "known must be a tensor"),
    ],
)
def test_bad_known_or_mask(known, mask, message: str) -> None:
    schedule = NoiseSchedule.from_name("linear", 10)
    with pytest.raises(ValueError, match=message):
        sample_repaint(linear_denoiser(schedule), torch.randn(2, 1, 3, 3), schedule, [9, 0], known=known, mask=mask,
                       jump_length=1, resample=1)  # fmt: skip


@pytest.mark.parametrize(
    "variance, steps, jump_length, resample",
    [("fixed_small", 50, 5, 10), ("fixed_small", 10, 3, 10), ("fixed_large", 10, 2, 5)],
)
def test_samples_have_the_exact_moments_of_the_algorithm(
    variance: str, steps: int, jump_length: int, resample: int
) -> None:
    """Driven by the ideal denoiser, RePaint's samples (N = 10000, on a respaced chain of 1000 cosine steps) have
    the mean and covariance that exact_moments propagates through Alg. 1: every mean within 5 standard errors
    (√(P_ii/N)), every covariance entry within 5 of its standard errors (√((P_ii P_jj + P_ij²)/N)); the known
    pixels are exactly VALUES. The coarse chains make index slips visible: noising the known pixels to the step's
    start t instead of its end s moves the mean by 0.016 (8 standard errors) at 10 steps, j = 3, r = 10, but by
    only 0.0014 at 50 steps."""
    schedule = NoiseSchedule.from_name("cosine", 1000)
    timesteps = spaced_timesteps(1000, steps)
    n = 10000
    x = run_repaint(schedule, timesteps, n, variance=variance, jump_length=jump_length, resample=resample)
    mean, cov = exact_moments(schedule, timesteps, repaint_schedule(steps, jump_length, resample), variance)
    assert torch.equal(x[:, KNOWN], VALUES.expand(n, 2))
    unknown = [i for i in range(4) if i not in KNOWN]
    mean_u, cov_u = mean[unknown], cov[unknown][:, unknown]
    se_mean = (cov_u.diagonal() / n).sqrt()
    assert ((x[:, unknown].mean(0) - mean_u).abs() <= 5 * se_mean).all(), (x[:, unknown].mean(0), mean_u)
    se_cov = ((cov_u.diagonal()[:, None] * cov_u.diagonal()[None, :] + cov_u**2) / n).sqrt()
    assert ((torch.cov(x[:, unknown].T) - cov_u).abs() <= 5 * se_cov).all(), (torch.cov(x[:, unknown].T), cov_u)


def test_resampling_approaches_the_gaussian_conditional() -> None:
    """RePaint's filled pixels approximate p(x_U | x_K = y), the Schur complement, and resampling is what makes the
    approximation good. Measured on DATA (Σ_ij = 0.25·0.9^|i−j|, y about two standard deviations from the mean;
    target mean (−0.066, −0.231), variance 0.0349, covariance 0.0173) with 250 respaced cosine steps and j = 10, as
    in the paper. Errors are the largest absolute error over the entries, from exact_moments (no sampling noise):

    | r | mean error | covariance error | relative to the conditional variance |
    | 1 (no resampling) | 0.097 | 0.024 | 69 % (variance 0.058: the prior's spread is kept) |
    | 2 | 0.050 | 0.0089 | 25 % |
    | 5 | 0.021 | 0.0018 | 5 % |
    | 10 | 0.013 | 0.0026 | 8 % (variance 0.032) |

    The mean converges monotonically; past r = 5 the covariance settles at the fixed point of the resampling loop,
    slightly under-dispersed, which is RePaint's own approximation (the reverse step is not the exact reverse of a
    20-fold jump of the chain), not sampling error. N = 4000 samples measured 0.093 / 0.025 at r = 1 and
    0.011 / 0.0039 at r = 10. Asserted: on the exact moments, r = 10 within 0.02 (mean) and 0.005 (covariance) and
    r = 1 at least 5 times worse in both; on the samples, r = 10 within the same tolerances plus 5 standard errors
    of the mean and 0.0008 (one standard error of a covariance entry), r = 1 above 0.07 and 0.015."""
    schedule = NoiseSchedule.from_name("cosine", 1000)
    timesteps = spaced_timesteps(1000, 250)
    unknown, target_mean, target_cov = DATA.conditional(KNOWN, VALUES)

    def errors(mean: Tensor, cov: Tensor) -> tuple[float, float]:
        return (
            float((mean[unknown] - target_mean).abs().max()),
            float((cov[unknown][:, unknown] - target_cov).abs().max()),
        )

    exact = {r: errors(*exact_moments(schedule, timesteps, repaint_schedule(250, 10, r))) for r in (1, 10)}
    assert exact[10][0] < 0.02 and exact[10][1] < 0.005, exact
    assert exact[1][0] > 5 * exact[10][0] and exact[1][1] > 5 * exact[10][1], exact

    n = 4000
    se_mean = math.sqrt(float(target_cov.diagonal().max()) / n)
    for r, (mean_tol, cov_tol) in {10: (0.02, 0.005), 1: (None, None)}.items():
        x = run_repaint(schedule, timesteps, n, jump_length=10, resample=r)
        mean_err, cov_err = errors(x.mean(0), torch.cov(x.T))
        if mean_tol is not None:
            assert mean_err < mean_tol + 5 * se_mean and cov_err < cov_tol + 0.0008, (r, mean_err, cov_err)
        else:
            assert mean_err > 0.07 and cov_err > 0.015, (r, mean_err, cov_err)
