"""denoising_diffusion.evaluation: the Fréchet distance against closed forms, the Gaussian fit, the noise floor, and
the small classifier's contract (shapes for any (channels, size), determinism for a seed, learning a trivial task).

Closed forms used (F(·) is the Fréchet distance ||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2}), Dowson & Landau 1982):
* F(μ, Σ; μ, Σ) = 0.
* Commuting diagonal Σ1 = diag(a), Σ2 = diag(b): F = ||μ1 − μ2||² + Σ_i (√a_i − √b_i)².
* Σ2 = c² Σ1: (Σ1 Σ2)^{1/2} = c Σ1, so F = (1 − c)² Tr(Σ1).
* 2x2, not commuting: the eigenvalues λ1, λ2 of Σ1 Σ2 are positive and (√λ1 + √λ2)² = tr(Σ1 Σ2) + 2 √det(Σ1 Σ2), so
  Tr((Σ1 Σ2)^{1/2}) = √(tr(Σ1 Σ2) + 2 √(det Σ1 det Σ2)).
* Any size, not commuting: Tr((Σ1 Σ2)^{1/2}) = Σ √λ_i over the eigenvalues of the non-symmetric Σ1 Σ2 (computed
  with a general eigensolver here; the implementation uses eigh of √Σ1 Σ2 √Σ1).
"""

from __future__ import annotations

import math

import pytest
import torch

from denoising_diffusion.evaluation import (
    FeatureReference,
    GaussianFit,
    NoiseFloor,
    SmallImageClassifier,
    classifier_accuracy,
    extract_features,
    feature_reference,
    feature_statistics,
    frechet_distance,
    frechet_distance_to,
    gaussian_fit,
    real_floor,
    train_classifier,
)


def _random_spd(dim: int, seed: int) -> torch.Tensor:
    a = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(dim, dtype=torch.float64)


def _flatten(images: torch.Tensor) -> torch.Tensor:
    """The simplest feature extractor: (N, C, H, W) -> (N, C·H·W)."""
    return images.flatten(1)


# ----- the Fréchet distance against closed forms ----------------------------------------------------------------


def test_identical_gaussians_are_at_distance_zero() -> None:
    mu, cov = torch.randn(6, dtype=torch.float64), _random_spd(6, 0)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)


def test_commuting_diagonal_closed_form() -> None:
    a, b = torch.tensor([1.0, 4.0, 0.25, 9.0]), torch.tensor([4.0, 1.0, 0.25, 0.0])  # b singular on purpose
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 0.0, 3.0])
    expected = 1 + 4 + (1 + 1 + 0 + 9)  # ||mu1 - mu2||² + Σ (√a − √b)²
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_scaled_covariance_closed_form() -> None:
    cov, c = _random_spd(5, 1), 3.0
    zeros = torch.zeros(5, dtype=torch.float64)
    assert frechet_distance(zeros, cov, zeros, c**2 * cov) == pytest.approx((1 - c) ** 2 * float(cov.trace()), rel=1e-8)


def test_non_commuting_2x2_closed_form() -> None:
    cov1 = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    cov2 = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    assert not torch.allclose(cov1 @ cov2, cov2 @ cov1)
    # tr(cov1 cov2) = 2 + 8 = 10, det cov1 = 3, det cov2 = 4: Tr((cov1 cov2)^{1/2}) = √(10 + 2√12)
    mu1, mu2 = torch.tensor([0.0, 0.0]), torch.tensor([1.0, -1.0])
    expected = 2 + 4 + 5 - 2 * math.sqrt(10 + 2 * math.sqrt(12))
    assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(expected, rel=1e-12)


def test_non_commuting_matches_the_eigenvalues_of_the_product() -> None:
    cov1, cov2 = _random_spd(6, 2), _random_spd(6, 3)
    evals = torch.linalg.eigvals(cov1 @ cov2)  # general (non-symmetric) solver; real and positive up to round-off
    assert evals.imag.abs().max() < 1e-9 * evals.real.abs().max()
    cross = float(evals.real.sqrt().sum())
    zeros = torch.zeros(6, dtype=torch.float64)
    expected = float(cov1.trace() + cov2.trace()) - 2 * cross
    assert frechet_distance(zeros, cov1, zeros, cov2) == pytest.approx(expected, rel=1e-9)


def test_float32_inputs_are_computed_in_float64() -> None:
    """Large, close variances (features of a wide layer): the traces cancel to 1e-8 of their size, which float32
    loses entirely (it returns 0). The inputs are integers, exact in float32; the answer is the diagonal closed form."""
    a = [1e6 + 37 * k for k in range(16)]
    b = [v + 100 for v in a]
    expected = sum((math.sqrt(x) - math.sqrt(y)) ** 2 for x, y in zip(a, b))  # ≈ 0.04
    zeros = torch.zeros(16)
    got = frechet_distance(zeros, torch.diag(torch.tensor(a)), zeros, torch.diag(torch.tensor(b)))
    assert got == pytest.approx(expected, rel=1e-6)


def test_shape_mismatch_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(torch.zeros(3), torch.eye(4), torch.zeros(3), torch.eye(4))


# ----- the Gaussian fit and sample estimates --------------------------------------------------------------------


def test_gaussian_fit_is_the_unbiased_fit_in_float64() -> None:
    """Rows ±(1, 0), ±(0, 2) about a mean: Σ x² = 2, Σ y² = 8, Σ xy = 0 over N = 4, so the unbiased covariance is
    diag(2/3, 8/3) (the biased one would be diag(1/2, 2)). Float32 features far from 0 lose the spread unless the fit
    is done in float64: checked against the same sums done here in float64."""
    offsets = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]], dtype=torch.float64)
    fit = gaussian_fit(torch.tensor([3.0, -5.0], dtype=torch.float64) + offsets)
    assert isinstance(fit, GaussianFit) and fit.mean.dtype == fit.cov.dtype == torch.float64
    assert torch.allclose(fit.mean, torch.tensor([3.0, -5.0], dtype=torch.float64), atol=1e-15)
    assert torch.allclose(fit.cov, torch.diag(torch.tensor([2 / 3, 8 / 3], dtype=torch.float64)), atol=1e-15)

    feats32 = (1e4 + 1e-2 * torch.randn(1000, 3, generator=torch.Generator().manual_seed(4))).float()
    centered = feats32.double() - feats32.double().mean(0)
    assert torch.allclose(gaussian_fit(feats32).cov, centered.T @ centered / 999, rtol=1e-9, atol=0)


def test_gaussian_fit_needs_two_samples() -> None:
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_fit(torch.zeros(1, 4))


def _sample(n: int, mean: torch.Tensor, cov: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    z = torch.randn(n, len(mean), generator=generator, dtype=torch.float64)
    return mean + z @ torch.linalg.cholesky(cov).T


def test_sample_estimate_approaches_the_closed_form() -> None:
    """Fits of two large samples from the 2x2 non-commuting pair above: the plug-in distance converges to it."""
    cov1 = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    cov2 = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    mu1, mu2 = torch.zeros(2, dtype=torch.float64), torch.tensor([1.0, -1.0], dtype=torch.float64)
    exact = 2 + 4 + 5 - 2 * math.sqrt(10 + 2 * math.sqrt(12))
    generator = torch.Generator().manual_seed(5)
    errors = []
    for n in (100, 100_000):
        estimates = [
            frechet_distance(
                *gaussian_fit(_sample(n, mu1, cov1, generator)), *gaussian_fit(_sample(n, mu2, cov2, generator))
            )
            for _ in range(20)
        ]
        errors.append(abs(sum(estimates) / len(estimates) - exact))
    assert errors[1] < 0.01 * exact and errors[1] < errors[0]


def test_bias_between_samples_of_one_gaussian_falls_as_one_over_n() -> None:
    """Two samples of the same Gaussian: the true distance is 0 and the plug-in estimate's mean is all bias,
    O(F / N): ten times the samples, about a tenth of the bias."""
    mean, cov = torch.zeros(4, dtype=torch.float64), _random_spd(4, 6)
    generator = torch.Generator().manual_seed(7)
    bias = [
        sum(
            frechet_distance(
                *gaussian_fit(_sample(n, mean, cov, generator)), *gaussian_fit(_sample(n, mean, cov, generator))
            )
            for _ in range(50)
        )
        / 50
        for n in (200, 2000)
    ]
    assert bias[0] > 0 and 6 < bias[0] / bias[1] < 16


# ----- any feature extractor ------------------------------------------------------------------------------------


def test_any_callable_is_an_extractor_and_batching_does_not_matter() -> None:
    images = torch.rand(50, 1, 2, 3, generator=torch.Generator().manual_seed(8))
    features = extract_features(_flatten, images, batch_size=7)
    assert features.shape == (50, 6) and features.dtype == torch.float64
    assert torch.equal(features, extract_features(_flatten, images, batch_size=500))
    reference = feature_reference(_flatten, images[:25])
    assert isinstance(reference, FeatureReference) and reference.num_images == 25
    direct = frechet_distance(*feature_statistics(_flatten, images[25:]), *gaussian_fit(features[:25]))
    assert frechet_distance_to(reference, images[25:]) == pytest.approx(direct, rel=1e-12)


def test_extractor_contract_is_checked() -> None:
    images = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match="training mode"):
        extract_features(SmallImageClassifier(1, 8, 10), images)  # a fresh module is in training mode
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        extract_features(lambda x: x, images)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        extract_features(_flatten, images[0])


def test_real_floor_is_mean_and_sd_and_falls_with_n() -> None:
    generator = torch.Generator().manual_seed(9)
    reference = feature_reference(_flatten, torch.randn(5000, 1, 2, 2, generator=generator))
    real = torch.randn(2000, 1, 2, 2, generator=generator)
    small, large = (real_floor(reference, real, n, draws=10, seed=0) for n in (20, 500))
    assert isinstance(small, NoiseFloor) and small.mean > 0 and small.sd > 0
    assert large.mean < small.mean / 5 and large.sd < small.sd
    assert real_floor(reference, real, 20, draws=10, seed=0) == small  # the seed decides the subsets
    assert real_floor(reference, real[:100], 100, draws=3).sd < 1e-9  # without replacement: all 100, every draw
    with pytest.raises(ValueError, match="num_samples"):
        real_floor(reference, real, 2001)
    with pytest.raises(ValueError, match="draws"):
        real_floor(reference, real, 20, draws=1)


# ----- the small classifier -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (3, 16), (3, 32), (1, 28), (3, 5)])
def test_classifier_shapes_follow_channels_and_size(channels: int, size: int) -> None:
    net = SmallImageClassifier(channels, size, num_classes=7, num_features=24).eval()
    x = torch.rand(3, channels, size, size)
    assert net(x).shape == net.features(x).shape == (3, 24) and net.logits(x).shape == (3, 7)
    assert all(torch.isfinite(p).all() for p in net.parameters())  # every parameter was initialized


def test_classifier_initialization_is_seeded_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b, c = (SmallImageClassifier(3, 16, 4, seed=s) for s in (1, 1, 2))
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.convs[0].weight, c.convs[0].weight)


def _squares(num: int, classes: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy 3x12x12 images of class k: a bright 3x3 square at the k-th of the four corners' positions."""
    labels = torch.randint(0, classes, (num,), generator=generator)
    images = 0.3 * torch.rand(num, 3, 12, 12, generator=generator)
    for k, (row, col) in enumerate([(1, 1), (1, 8), (8, 1), (8, 8)][:classes]):
        images[labels == k, :, row : row + 3, col : col + 3] = 1.0
    return images, labels


def test_training_is_deterministic_for_a_seed_and_learns_a_trivial_task() -> None:
    generator = torch.Generator().manual_seed(10)
    (images, labels), (test_images, test_labels) = _squares(256, 4, generator), _squares(200, 4, generator)
    state = torch.random.get_rng_state()
    kwargs = {"steps": 40, "batch_size": 32, "width": 16, "num_features": 32}  # 1.0 for each of seeds 0-11
    a, b = (train_classifier(images, labels, seed=3, **kwargs) for _ in range(2))
    c = train_classifier(images, labels, seed=torch.Generator().manual_seed(4), **kwargs)
    assert torch.equal(state, torch.random.get_rng_state())
    assert not a.training
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.fc.weight, c.fc.weight)
    assert classifier_accuracy(a, test_images, test_labels) >= 0.95
