"""FID, KID and precision / recall of generated images against real ones, in one feature space.

Every metric here is a function of two feature sets (real (M, F), generated (N, F)) taken by one extractor
(frechet.py's :data:`~denoising_diffusion.evaluation.FeatureExtractor`: Inception-v3's pool features for the
numbers papers report, inception.py; or any other). The real side is a :class:`RealFeatures`: its features and
their Gaussian fit, computed once and cached per folder (feature_cache.py).

* **FID** (Heusel et al. 2017): the Fréchet distance of the two Gaussian fits (evaluation.frechet_distance, float64,
  eigh of √Σ₁ Σ₂ √Σ₁ instead of a general sqrtm).
* **KID** (Bińkowski et al. 2018, eq. 2 and App. D): the unbiased estimate of the squared MMD with the cubic
  polynomial kernel k(x, y) = (xᵀy / F + 1)³, averaged over ``subsets`` random pairs of subsets of ``subset_size``
  real and generated features (drawn without replacement within a subset); the kernel and the estimator are
  torchmetrics' (``poly_mmd``). Unbiased: its expectation is 0 when both sets come from one distribution, so it
  can be negative.
* **Precision and recall** (Kynkäänniemi et al. 2019, eqs. 1-3): each set's manifold is the union of balls around its
  points with radius the distance to the point's k-th nearest neighbour in the set (k = 3). Precision: the fraction
  of generated points inside the real manifold; recall: the fraction of real points inside the generated one.
  torchmetrics has no such metric (nor has torch-fidelity 0.3, the version it can use here), so it is written here,
  in blocks of rows so that memory stays O(block · M).

torchmetrics and torch-fidelity are the ``eval`` extra (``pip install "denoising-diffusion[eval]"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..choices import Choice
from .frechet import FeatureExtractor, GaussianFit, extract_features, frechet_distance, gaussian_fit

KID_SUBSETS = 100  # Bińkowski et al. 2018 and torchmetrics: 100 subsets ...
KID_SUBSET_SIZE = 1000  # ... of 1000 features each (fewer when a set is smaller: see kernel_distance)
PR_NEIGHBOURS = 3  # Kynkäänniemi et al. 2019: k = 3


class Metric(Choice):
    """Which numbers to compute: 'fid', 'kid' (mean and sd over subsets), 'pr' (precision and recall)."""

    FID = "fid"
    KID = "kid"
    PR = "pr"


Metric.__option__ = "metric"  # type: ignore[attr-defined]
ALL_METRICS: tuple[Metric, ...] = (Metric.FID, Metric.KID, Metric.PR)


def _import_error(what: str) -> ImportError:
    return ImportError(f"{what} needs torchmetrics and torch-fidelity: pip install 'denoising-diffusion[eval]'")


@dataclass(frozen=True)
class RealFeatures:
    """The real side of every metric: features (M, F) float64 on the CPU, their Gaussian fit, and where they
    came from (``identity``: the extractor's identity, so that features of another extractor are never compared
    with these)."""

    features: Tensor
    fit: GaussianFit
    identity: str = ""
    source: str = ""

    @classmethod
    def from_features(cls, features: Tensor, identity: str = "", source: str = "") -> RealFeatures:
        features = features.to("cpu", torch.float64)
        return cls(features, gaussian_fit(features), identity, source)

    @property
    def num_images(self) -> int:
        return len(self.features)


@dataclass(frozen=True)
class Scores:
    """The metrics of one generated set; None where not computed. ``num_generated`` and ``num_real`` are part of
    the result: FID and precision/recall depend on them (compare numbers only at equal counts)."""

    num_generated: int
    num_real: int
    fid: float | None = None
    kid_mean: float | None = None
    kid_sd: float | None = None
    kid_subset_size: int | None = None
    precision: float | None = None
    recall: float | None = None

    def as_dict(self) -> dict[str, float]:
        """The computed values by name (what a log or a table shows)."""
        names = ("fid", "kid_mean", "kid_sd", "precision", "recall")
        return {name: float(getattr(self, name)) for name in names if getattr(self, name) is not None}


# ----- how many images each metric needs -------------------------------------------------------------------------


def minimum_images(metrics: Sequence[Metric | str], neighbours: int = PR_NEIGHBOURS) -> int:
    """The fewest images per set the metrics are defined for: 2 for FID (a covariance) and KID (a pair within a
    subset), k + 1 for precision/recall (a k-th neighbour other than the point itself)."""
    return max(neighbours + 1 if Metric(m) is Metric.PR else 2 for m in metrics)


def check_counts(
    metrics: Sequence[Metric | str], num_real: int, num_generated: int, neighbours: int = PR_NEIGHBOURS
) -> None:
    """ValueError saying how many images are needed when either set is too small for ``metrics``."""
    need = minimum_images(metrics, neighbours)
    names = ", ".join(Metric(m).value for m in metrics)
    for side, count in (("real", num_real), ("generated", num_generated)):
        if count < need:
            raise ValueError(f"{names} need at least {need} {side} images, got {count}")


# ----- the metrics on features ------------------------------------------------------------------------------------


def fid_from_features(real: RealFeatures, generated: Tensor) -> float:
    """FID: Fréchet distance between the Gaussian fits of generated features (N, F) and the real ones."""
    return frechet_distance(*gaussian_fit(generated), *real.fit)


def kernel_distance(
    real: Tensor,
    generated: Tensor,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[float, float, int]:
    """KID: (mean, sd, subset size) over ``subsets`` unbiased MMD² estimates (cubic polynomial kernel) between
    random subsets of real (M, F) and generated (N, F) features (Bińkowski et al. 2018).

    ``subset_size`` None: min(1000, M, N). Each subset is drawn without replacement by ``generator`` (CPU), and the
    global RNG is left alone (torchmetrics' KernelInceptionDistance draws from it).
    """
    try:
        from torchmetrics.image.kid import poly_mmd
    except ImportError:
        raise _import_error("KID") from None
    size = min(KID_SUBSET_SIZE, len(real), len(generated)) if subset_size is None else subset_size
    if size < 2 or size > min(len(real), len(generated)):
        raise ValueError(
            f"KID subset_size must be in [2, min(real, generated) = {min(len(real), len(generated))}], got {size}"
        )
    if subsets < 1:
        raise ValueError(f"KID subsets must be >= 1, got {subsets}")
    real, generated = real.to(torch.float64), generated.to(torch.float64)
    values = torch.stack(
        [
            poly_mmd(
                real[torch.randperm(len(real), generator=generator)[:size]],
                generated[torch.randperm(len(generated), generator=generator)[:size]],
                degree=3,
            )
            for _ in range(subsets)
        ]
    )
    sd = float(values.std()) if subsets > 1 else 0.0
    return float(values.mean()), sd, size


def _kth_neighbour_radii(features: Tensor, neighbours: int, block: int) -> Tensor:
    """(M,) distance of each feature to its k-th nearest neighbour in the set, itself excluded (the (k+1)-th
    smallest distance, the point's own 0 being the first)."""
    return torch.cat(
        [torch.cdist(part, features).kthvalue(neighbours + 1, dim=1).values for part in features.split(block)]
    )


def _inside_manifold(points: Tensor, centres: Tensor, radii: Tensor, block: int) -> Tensor:
    """(P,) bool: whether each point lies in some ball ||point − centre_j|| <= radius_j (Kynkäänniemi et al.
    2019, eq. 1: f(φ, Φ) = 1 iff ||φ − φ'|| <= ||φ' − NN_k(φ')|| for some φ' in Φ)."""
    return torch.cat([(torch.cdist(part, centres) <= radii).any(dim=1) for part in points.split(block)])


def precision_recall(
    real: Tensor, generated: Tensor, *, neighbours: int = PR_NEIGHBOURS, block: int = 4096
) -> tuple[float, float]:
    """(precision, recall) of generated features (N, F) against real ones (M, F) with k-NN manifolds,
    k = ``neighbours`` (Kynkäänniemi et al. 2019, eqs. 1-3): precision = mean over generated points of "inside the
    real manifold", recall = mean over real points of "inside the generated manifold". Needs M, N > k. Distances
    in float64, ``block`` rows at a time (memory O(block · max(M, N)))."""
    if min(len(real), len(generated)) <= neighbours:
        raise ValueError(
            f"precision/recall with k={neighbours} need at least {neighbours + 1} real and generated images, got "
            f"{len(real)} and {len(generated)}"
        )
    real, generated = real.to(torch.float64), generated.to(torch.float64)
    real_radii = _kth_neighbour_radii(real, neighbours, block)
    generated_radii = _kth_neighbour_radii(generated, neighbours, block)
    precision = _inside_manifold(generated, real, real_radii, block).double().mean()
    recall = _inside_manifold(real, generated, generated_radii, block).double().mean()
    return float(precision), float(recall)


@dataclass(frozen=True)
class MetricOptions:
    """How the metrics are computed: which ones, KID's subsets and subset size (None: min(1000, M, N)), the
    neighbours k of precision/recall, and the seed of KID's subsets."""

    metrics: tuple[Metric, ...] = ALL_METRICS
    kid_subsets: int = KID_SUBSETS
    kid_subset_size: int | None = None
    neighbours: int = PR_NEIGHBOURS
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(Metric(m) for m in self.metrics))
        if not self.metrics:
            raise ValueError("metrics must name at least one of 'fid', 'kid', 'pr'")


DEFAULT_OPTIONS = MetricOptions()


def score_features(real: RealFeatures, generated: Tensor, options: MetricOptions = DEFAULT_OPTIONS) -> Scores:
    """The chosen metrics of generated features (N, F) against ``real``."""
    if generated.dim() != 2 or generated.shape[1] != real.features.shape[1]:
        raise ValueError(
            f"generated features must be (N, {real.features.shape[1]}) like the real ones, got {tuple(generated.shape)}"
        )
    check_counts(options.metrics, real.num_images, len(generated), options.neighbours)
    generated = generated.to("cpu", torch.float64)
    values: dict[str, Any] = {}
    if Metric.FID in options.metrics:
        values["fid"] = fid_from_features(real, generated)
    if Metric.KID in options.metrics:
        generator = torch.Generator().manual_seed(options.seed)
        mean, sd, size = kernel_distance(
            real.features, generated, subsets=options.kid_subsets, subset_size=options.kid_subset_size,
            generator=generator,
        )  # fmt: skip
        values.update(kid_mean=mean, kid_sd=sd, kid_subset_size=size)
    if Metric.PR in options.metrics:
        values["precision"], values["recall"] = precision_recall(
            real.features, generated, neighbours=options.neighbours
        )
    return Scores(num_generated=len(generated), num_real=real.num_images, **values)


def score_images(
    real: RealFeatures,
    extractor: FeatureExtractor,
    images: Tensor,
    options: MetricOptions = DEFAULT_OPTIONS,
    *,
    batch_size: int = 256,
) -> Scores:
    """The chosen metrics of images (N, C, H, W) in [0, 1] against ``real`` (whose features ``extractor`` took)."""
    check_counts(options.metrics, real.num_images, len(images), options.neighbours)
    return score_features(real, extract_features(extractor, images, batch_size=batch_size), options)


def extractor_device(extractor: FeatureExtractor) -> torch.device:
    """Where an nn.Module extractor's parameters are (images go there); the CPU for anything else."""
    parameters = getattr(extractor, "parameters", None)
    first = next(parameters(), None) if callable(parameters) else None
    return first.device if isinstance(first, Tensor) else torch.device("cpu")


@dataclass(frozen=True)
class ImageMetric:
    """A metric callable for the Trainer (``Trainer(metric=...)``): images (N, C, H, W) in [0, 1] -> {name: value}.

    ``extractor`` must be the one ``real`` was computed with."""

    real: RealFeatures
    extractor: FeatureExtractor
    options: MetricOptions = field(default_factory=lambda: MetricOptions(metrics=(Metric.FID,)))
    batch_size: int = 256

    def __call__(self, images: Tensor) -> Mapping[str, float]:
        images = images.to(extractor_device(self.extractor))
        return score_images(self.real, self.extractor, images, self.options, batch_size=self.batch_size).as_dict()


MetricFn = Callable[[Tensor], Mapping[str, float]]
"""What ``Trainer(metric=...)`` takes: generated images (N, C, H, W) in [0, 1] -> named values."""
