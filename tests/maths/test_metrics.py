"""denoising_diffusion.evaluation.metrics: FID, KID and precision/recall on features, against closed forms, brute-force
formulas, hand-worked examples and torchmetrics' own FID. All on small float64 feature sets: no images, no network.

Tolerances come from the estimators' spread, measured in the test itself over R independent replicates: a mean of R
estimates is compared with its target within 4 standard errors (sd / √R; a false alarm about once in 16 000 runs
for a Gaussian mean, and the seeds are fixed), plus, for FID, its known O(1/N) upward bias (bounded below).
"""

from __future__ import annotations

import math

import pytest
import torch

from denoising_diffusion.evaluation import frechet_distance
from denoising_diffusion.evaluation.metrics import (
    Metric,
    MetricOptions,
    RealFeatures,
    check_counts,
    kernel_distance,
    precision_recall,
    score_features,
)
from tests.eval_helpers import Projection


def _gaussian(n: int, mean: torch.Tensor, cov: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """n draws (n, F) of N(mean, cov), float64."""
    z = torch.randn(n, len(mean), generator=generator, dtype=torch.float64)
    return mean + z @ torch.linalg.cholesky(cov).T


MEAN_1, MEAN_2 = torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, 0.0, -0.5], dtype=torch.float64)
COV_1 = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]], dtype=torch.float64)
COV_2 = torch.tensor([[1.0, -0.4, 0.2], [-0.4, 2.0, 0.0], [0.2, 0.0, 1.5]], dtype=torch.float64)


def test_fid_of_a_set_with_itself_is_zero() -> None:
    features = _gaussian(200, MEAN_1, COV_1, torch.Generator().manual_seed(0))
    scores = score_features(RealFeatures.from_features(features), features, MetricOptions(metrics=("fid",)))
    assert scores.fid == pytest.approx(0.0, abs=1e-9)
    assert (scores.num_generated, scores.num_real) == (200, 200)


def test_fid_of_two_gaussians_matches_the_closed_form_within_sampling_error() -> None:
    """Features drawn from N(μ1, Σ1) (real) and N(μ2, Σ2) (generated), Σ1 Σ2 not commuting. Target: the Fréchet
    distance of the true Gaussians (the closed form, tests/maths/test_evaluation.py). The plug-in estimate is biased
    upwards by O(F/N): its mean term alone by (tr Σ1 + tr Σ2)/N; we allow twice that for the bias, plus 4 SE."""
    assert not torch.allclose(COV_1 @ COV_2, COV_2 @ COV_1)
    exact = frechet_distance(MEAN_1, COV_1, MEAN_2, COV_2)
    generator, n, replicates = torch.Generator().manual_seed(1), 2000, 40
    estimates = torch.tensor(
        [
            score_features(
                RealFeatures.from_features(_gaussian(n, MEAN_1, COV_1, generator)),
                _gaussian(n, MEAN_2, COV_2, generator),
                MetricOptions(metrics=("fid",)),
            ).fid
            for _ in range(replicates)
        ],
        dtype=torch.float64,
    )
    bias = 2 * float(COV_1.trace() + COV_2.trace()) / n  # 0.007
    standard_error = float(estimates.std()) / math.sqrt(replicates)  # about 0.01
    assert abs(float(estimates.mean()) - exact) <= 4 * standard_error + bias, (float(estimates.mean()), exact)
    assert exact > 1.0  # a distance the tolerance (about 0.05) can tell from 0


def test_fid_agrees_with_torchmetrics() -> None:
    """torchmetrics' FrechetInceptionDistance with the same custom feature module (its sqrt of the non-symmetric
    product in eigvals; ours eigh of √Σ1 Σ2 √Σ1): equal to 1e-6 relative on a well-conditioned case."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    generator = torch.Generator().manual_seed(2)
    real_images = torch.rand(64, 3, 8, 8, generator=generator)
    fake_images = torch.rand(48, 3, 8, 8, generator=generator) ** 2  # darker: a clear distance
    extractor = Projection()
    fid = FrechetInceptionDistance(feature=extractor, normalize=True)
    fid.update(real_images, real=True)
    fid.update(fake_images, real=False)
    ours = score_features(
        RealFeatures.from_features(extractor(real_images)), extractor(fake_images), MetricOptions(metrics=("fid",))
    ).fid
    assert ours == pytest.approx(float(fid.compute()), rel=1e-6)


def _unbiased_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Bińkowski et al. 2018, eq. 2, by explicit double loops: k(a, b) = (aᵀb / F + 1)³, i ≠ j in the within-set
    sums, all pairs in the cross sum."""
    m, dim = len(x), x.shape[1]

    def k(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a @ b / dim + 1) ** 3)

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (xx + yy) / (m * (m - 1)) - 2 * xy / m**2


def test_kid_is_the_unbiased_mmd_with_the_cubic_kernel() -> None:
    """One subset holding every feature (any order gives the same value): the brute-force formula."""
    generator = torch.Generator().manual_seed(3)
    x = _gaussian(7, MEAN_1, COV_1, generator)
    y = _gaussian(7, MEAN_2, COV_2, generator)
    mean, sd, size = kernel_distance(x, y, subsets=3, subset_size=7, generator=generator)
    assert size == 7 and sd == pytest.approx(0.0, abs=1e-12)
    assert mean == pytest.approx(_unbiased_mmd2(x, y), rel=1e-12)


def test_kid_is_unbiased_for_two_samples_of_one_distribution() -> None:
    """E[KID] = 0 for two samples of one distribution: the mean over R = 400 draws of two sets of m = 20 features is
    0 within 4 SE. A biased estimator (diagonal terms kept, or subsets drawn with replacement) sits far above:
    its bias, about E k(x, x)/m ~ 0.5 here, is several SE."""
    generator, replicates, m = torch.Generator().manual_seed(4), 400, 20
    values = torch.tensor(
        [
            kernel_distance(
                _gaussian(m, MEAN_1, COV_1, generator), _gaussian(m, MEAN_1, COV_1, generator), subsets=1,
                generator=generator,
            )[0]
            for _ in range(replicates)
        ],
        dtype=torch.float64,
    )  # fmt: skip
    standard_error = float(values.std()) / math.sqrt(replicates)
    assert abs(float(values.mean())) <= 4 * standard_error, (float(values.mean()), standard_error)


def test_kid_subsets_are_drawn_from_the_generator_and_sized_to_the_smaller_set() -> None:
    generator = torch.Generator().manual_seed(5)
    x, y = _gaussian(30, MEAN_1, COV_1, generator), _gaussian(12, MEAN_2, COV_2, generator)
    first = kernel_distance(x, y, subsets=5, generator=torch.Generator().manual_seed(0))
    state = torch.random.get_rng_state()
    assert kernel_distance(x, y, subsets=5, generator=torch.Generator().manual_seed(0)) == first
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert first[2] == 12 and first[0] > 0
    with pytest.raises(ValueError, match="subset_size must be in"):
        kernel_distance(x, y, subset_size=13)


def test_precision_recall_hand_worked_example() -> None:
    """1-D, k = 1. Real {0, 1, 2, 3, 10}: radii 1, 1, 1, 1, 7. Generated {0.5, 5, 20, 2.9}: radii (to the nearest
    other generated point) 2.4, 2.1, 15, 2.1. Precision: 0.5, 5 (|5 − 10| <= 7) and 2.9 are inside the real
    manifold, 20 is not: 3/4. Recall: 0, 1, 2, 3 are near 0.5 or 2.9, and 10 is inside 20's ball (10 <= 15): 5/5."""
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]], dtype=torch.float64)
    generated = torch.tensor([[0.5], [5.0], [20.0], [2.9]], dtype=torch.float64)
    assert precision_recall(real, generated, neighbours=1) == pytest.approx((0.75, 1.0))


def test_precision_recall_with_k3_on_identical_and_disjoint_sets() -> None:
    generator = torch.Generator().manual_seed(6)
    real = _gaussian(40, MEAN_1, COV_1, generator)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    # a generated set covering half the real one: precise, but recall about 1/2
    half = real[real[:, 0] > 0]
    precision, recall = precision_recall(real, half)
    assert precision == 1.0 and 0.3 < recall < 0.8


def test_score_features_reports_counts_and_every_metric() -> None:
    generator = torch.Generator().manual_seed(7)
    real = RealFeatures.from_features(_gaussian(50, MEAN_1, COV_1, generator))
    scores = score_features(real, _gaussian(30, MEAN_2, COV_2, generator))
    assert (scores.num_real, scores.num_generated, scores.kid_subset_size) == (50, 30, 30)
    assert set(scores.as_dict()) == {"fid", "kid_mean", "kid_sd", "precision", "recall"}


@pytest.mark.parametrize(
    "metrics,num_real,num_generated,message",
    [
        (("fid",), 1, 10, "need at least 2 real images, got 1"),
        (("kid",), 10, 1, "need at least 2 generated images, got 1"),
        (("fid", "pr"), 10, 3, "need at least 4 generated images, got 3"),
    ],
)
def test_too_few_images_say_how_many_are_needed(metrics, num_real, num_generated, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_counts(metrics, num_real, num_generated)


def test_unknown_metric_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="unknown metric 'is'; allowed values: 'fid', 'kid', 'pr'"):
        Metric("is")
