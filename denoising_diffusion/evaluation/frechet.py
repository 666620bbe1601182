"""Feature-space distances between image sets: the Fréchet distance of Gaussian fits, and its noise floor.

A *feature extractor* is any callable ``images (N, C, H, W) in [0, 1] -> features (N, F)``: Inception-v3's pool
layer for FID (Heusel et al. 2017), or, for small images where Inception (trained on 299x299 photographs) says
little, :class:`SmallImageClassifier`, a small CNN trained on the real data's labels by :func:`train_classifier`,
whose penultimate layer plays Inception's part. Everything below takes the extractor as an argument; nothing
here knows which one it is.

    classifier = train_classifier(train_images, train_labels, seed=0)   # an extractor (and a classifier)
    reference = feature_reference(classifier, heldout_images)          # extractor + Gaussian fit of its features
    fd = frechet_distance_to(reference, generated_images)              # one number, lower is better
    floor = real_floor(reference, train_images, num_samples=len(generated_images))   # what real data scores

The distance between N samples and a reference is biased upwards by the sampling noise of N samples; the floor
(the distance of N *real* images to the same reference, mean ± sd over random subsets) is the score of a perfect
model at that N, and its sd the noise of one measurement. See docs/evaluation.md.

Statistics are computed in float64 on the CPU whatever the extractor's device and dtype: the distance subtracts
traces of similar size, and float32 loses it (tests/maths/test_evaluation.py shows a case).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

FeatureExtractor = Callable[[Tensor], Tensor]
"""images (N, C, H, W) in [0, 1] -> features (N, F). An nn.Module must be in eval mode."""


class GaussianFit(NamedTuple):
    """A Gaussian fitted to features: mean (F,) and unbiased covariance (F, F), float64.
    Unpacks as ``mean, cov``, so ``frechet_distance(*fit1, *fit2)`` works."""

    mean: Tensor
    cov: Tensor


class NoiseFloor(NamedTuple):
    """Mean and standard deviation of the real-vs-real distance over random subsets (see :func:`real_floor`)."""

    mean: float
    sd: float


@dataclass(frozen=True)
class FeatureReference:
    """The reference side of a distance: the extractor and the Gaussian fit of the reference images' features
    under it. Keeping them together means a fit is never compared with features from another extractor."""

    extractor: FeatureExtractor
    fit: GaussianFit
    num_images: int


# ----- Gaussian fit and the Fréchet distance --------------------------------------------------------------------


def gaussian_fit(features: Tensor) -> GaussianFit:
    """Mean (F,) and unbiased covariance (F, F) (divisor N − 1) of features (N, F), in float64."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (N, F) with N >= 2, got shape {tuple(features.shape)}")
    features = features.to(torch.float64)
    dim = features.shape[1]
    return GaussianFit(features.mean(0), torch.cov(features.T).reshape(dim, dim))  # torch.cov: (F, N) -> (F, F)


def _sqrtm_psd(matrix: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    evals, evecs = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Fréchet (squared 2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2) (Dowson & Landau 1982):
    ||mu1 − mu2||² + Tr(cov1 + cov2 − 2 (cov1 cov2)^{1/2}).

    Tr((cov1 cov2)^{1/2}) is computed as Tr((√cov1 cov2 √cov1)^{1/2}): the two matrices are similar, and the
    latter is symmetric PSD, so eigh is exact and stable where a general sqrtm of the non-symmetric product (scipy's,
    in most FID code) returns complex round-off. Computed in float64. Round-off can leave about −1e-12 for
    identical inputs; the value is not clamped.

    Args:
        mu1, mu2: means (F,). cov1, cov2: symmetric PSD covariances (F, F).
    """
    mu1, cov1, mu2, cov2 = (t.to(torch.float64) for t in (mu1, cov1, mu2, cov2))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(
            f"shape mismatch: means {tuple(mu1.shape)}, {tuple(mu2.shape)}; "
            f"covariances {tuple(cov1.shape)}, {tuple(cov2.shape)}"
        )
    root1 = _sqrtm_psd(cov1)
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp(min=0).sqrt().sum()  # Tr((cov1 cov2)^{1/2})
    return float(((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * cross)


# ----- features through any extractor ---------------------------------------------------------------------------


def extract_features(extractor: FeatureExtractor, images: Tensor, *, batch_size: int = 256) -> Tensor:
    """Features (N, F), float64 on the CPU, of images (N, C, H, W) in [0, 1], in batches under inference_mode.

    Images stay on their device (put them where the extractor is). An nn.Module in training mode is refused:
    dropout or batch statistics would make the features depend on the batch.
    """
    if isinstance(extractor, nn.Module) and extractor.training:
        raise ValueError("the feature extractor is in training mode; call .eval() on it first")
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    with torch.inference_mode():
        parts = [extractor(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    features = torch.cat([p.to("cpu", torch.float64) for p in parts])
    if features.shape[0] != len(images) or features.dim() != 2:
        raise ValueError(
            f"a feature extractor must map (N, C, H, W) to (N, F); {tuple(images.shape)} gave {tuple(features.shape)}"
        )
    return features


def feature_statistics(extractor: FeatureExtractor, images: Tensor, *, batch_size: int = 256) -> GaussianFit:
    """Gaussian fit (mean (F,), covariance (F, F), float64) of the features of images (N, C, H, W), N >= 2."""
    return gaussian_fit(extract_features(extractor, images, batch_size=batch_size))


def feature_reference(extractor: FeatureExtractor, images: Tensor, *, batch_size: int = 256) -> FeatureReference:
    """The reference set's statistics under ``extractor``, bundled with it (images (N, C, H, W) in [0, 1])."""
    return FeatureReference(extractor, feature_statistics(extractor, images, batch_size=batch_size), len(images))


def frechet_distance_to(reference: FeatureReference, images: Tensor, *, batch_size: int = 256) -> float:
    """Fréchet distance between the Gaussian fit of ``images``' features (N, C, H, W) and ``reference``'s."""
    return frechet_distance(*feature_statistics(reference.extractor, images, batch_size=batch_size), *reference.fit)


def real_floor(
    reference: FeatureReference,
    real_images: Tensor,
    num_samples: int,
    *,
    draws: int = 20,
    seed: int | torch.Generator = 0,
    batch_size: int = 256,
) -> NoiseFloor:
    """The real-vs-real floor: mean ± sd, over ``draws`` random subsets of ``num_samples`` real images (drawn
    without replacement), of their distance to ``reference``.

    The mean is what a perfect model scores with ``num_samples`` samples (the plug-in distance is biased upwards
    by O(F / N)); the sd is the sampling noise of any one measurement at that N. ``real_images`` (M, C, H, W)
    should be disjoint from the reference images (e.g. the training split against a held-out reference), or the
    floor comes out too low. ``seed`` (an int or a CPU torch.Generator) decides the subsets.
    """
    if not 2 <= num_samples <= len(real_images) or draws < 2:
        raise ValueError(
            f"need 2 <= num_samples <= {len(real_images)} (the real images) and draws >= 2, "
            f"got num_samples={num_samples}, draws={draws}"
        )
    generator = seeded_generator(seed)
    features = extract_features(reference.extractor, real_images, batch_size=batch_size)  # each image once
    subsets = [torch.randperm(len(features), generator=generator)[:num_samples] for _ in range(draws)]
    values = torch.tensor(
        [frechet_distance(*gaussian_fit(features[s]), *reference.fit) for s in subsets], dtype=torch.float64
    )
    return NoiseFloor(float(values.mean()), float(values.std()))


def seeded_generator(seed: int | torch.Generator) -> torch.Generator:
    return seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
