"""Loss objects: the training-time distribution (times.py), the loss weightings (weighting.py), the distance
(distance.py) and the terms of the variational bound (vlb.py), composed by :class:`DenoisingLoss` (denoising.py).
Weightings and time distributions are registered, so a new one joins where it is defined."""

from .denoising import DenoisingLoss, hybrid_vlb_term
from .distance import LossType, per_sample_loss
from .times import (
    TIME_DISTRIBUTIONS,
    LogitNormalTimes,
    LogNormalSigma,
    TimeDistribution,
    UniformTimes,
    make_times,
    times_kind,
)
from .vlb import Decoder, discretized_gaussian_log_likelihood, gaussian_log_likelihood, normal_kl, vlb_term
from .weighting import (
    WEIGHTINGS,
    LikelihoodWeighting,
    MinSNRWeighting,
    SimpleWeighting,
    Weighting,
    likelihood_weight,
    make_weighting,
    min_snr_weight,
    weighting_kind,
)

__all__ = [
    "TIME_DISTRIBUTIONS",
    "WEIGHTINGS",
    "Decoder",
    "DenoisingLoss",
    "LikelihoodWeighting",
    "LogNormalSigma",
    "LogitNormalTimes",
    "LossType",
    "MinSNRWeighting",
    "SimpleWeighting",
    "TimeDistribution",
    "UniformTimes",
    "Weighting",
    "discretized_gaussian_log_likelihood",
    "gaussian_log_likelihood",
    "hybrid_vlb_term",
    "likelihood_weight",
    "make_times",
    "make_weighting",
    "min_snr_weight",
    "normal_kl",
    "per_sample_loss",
    "times_kind",
    "vlb_term",
    "weighting_kind",
]
