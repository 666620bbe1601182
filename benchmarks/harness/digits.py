"""The digits the quality benchmarks measure on, and how they measure: scikit-learn's bundled 8x8 digits (1797
images, values 0-16; nothing is downloaded; the optional extra ``bench``), scaled to [0, 1] and split (seed 0) into
1297 training and 500 held-out images; ``denoising_diffusion.evaluation``'s small classifier trained on the training
split, whose 64 penultimate features play the part Inception-v3 plays in FID; the Fréchet distance of generated
images to the held-out ones in that space; and the real-vs-real floor (as many training images against the same
held-out set: what a perfect model scores at this sample size), random or class-balanced.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from denoising_diffusion.evaluation import (
    FeatureReference,
    NoiseFloor,
    SmallImageClassifier,
    classifier_accuracy,
    extract_features,
    feature_reference,
    frechet_distance,
    frechet_distance_to,
    gaussian_fit,
    real_floor,
    train_classifier,
)

NUM_HELDOUT = 500
NUM_CLASSES = 10
FLOOR_DRAWS = 20  # random training subsets behind a floor's mean and spread


def load_split(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The digits as (train_x, train_y, heldout_x, heldout_y); images (N, 1, 8, 8) in [0, 1], labels (N,)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("this benchmark needs scikit-learn: pip install 'denoising-diffusion[bench]'") from err
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    held, train = order[:NUM_HELDOUT], order[NUM_HELDOUT:]
    return images[train], labels[train], images[held], labels[held]


@dataclass
class Evaluation:
    """The split, the evaluation classifier (its held-out accuracy, the ceiling of any class accuracy), the held-out
    images' feature statistics, and the floors at the benchmark's sample size (mean ± sd over FLOOR_DRAWS subsets;
    ``balanced_floor`` only when asked for)."""

    train_x: Tensor
    train_y: Tensor
    heldout_x: Tensor
    heldout_y: Tensor
    classifier: SmallImageClassifier
    accuracy: float
    reference: FeatureReference
    floor: NoiseFloor
    balanced_floor: NoiseFloor | None = None


def evaluation(classifier_steps: int, num_samples: int, *, seed: int = 0, per_class: int | None = None) -> Evaluation:
    """The split and classifier of ``seed``, the reference and the floor of ``num_samples`` random training images
    (subsets from seed + 2); with ``per_class``, the class-balanced floor too (seed + 3). Prints the accuracy."""
    train_x, train_y, held_x, held_y = load_split(seed)
    start = time.perf_counter()
    classifier = train_classifier(train_x, train_y, steps=classifier_steps, seed=seed)
    accuracy = classifier_accuracy(classifier, held_x, held_y)
    print(f"classifier: held-out accuracy {accuracy:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    reference = feature_reference(classifier, held_x)
    balanced = None if per_class is None else balanced_floor(reference, train_x, train_y, per_class, seed=seed + 3)
    floor = real_floor(reference, train_x, num_samples, draws=FLOOR_DRAWS, seed=seed + 2)
    return Evaluation(train_x, train_y, held_x, held_y, classifier, accuracy, reference, floor, balanced)


def balanced_floor(
    reference: FeatureReference, images: Tensor, labels: Tensor, per_class: int, draws: int = FLOOR_DRAWS, seed: int = 0
) -> NoiseFloor:
    """Like ``real_floor``, but each subset holds ``per_class`` real images of every class, as class-balanced
    generated sets do (a random subset's class mix varies, and that variation is much of the plain floor's value
    and spread)."""
    features = extract_features(reference.extractor, images)
    generator = torch.Generator().manual_seed(seed)
    by_class = [torch.nonzero(labels == k).flatten() for k in range(NUM_CLASSES)]
    smallest = min(len(c) for c in by_class)
    if per_class > smallest:
        raise ValueError(f"--per-class {per_class} is more than the real images of the smallest class ({smallest})")
    values = []
    for _ in range(draws):
        subset = torch.cat([c[torch.randperm(len(c), generator=generator)[:per_class]] for c in by_class])
        values.append(frechet_distance(*gaussian_fit(features[subset]), *reference.fit))
    t = torch.tensor(values, dtype=torch.float64)
    return NoiseFloor(float(t.mean()), float(t.std()))


def sample_labels(per_class: int) -> Tensor:
    """(10 · per_class,) labels 0, 1, …, 9, 0, 1, …: every class ``per_class`` times, every chunk of 250 balanced."""
    return torch.arange(NUM_CLASSES).repeat(per_class)


def per_class_accuracy(classifier: SmallImageClassifier, images: Tensor, labels: Tensor) -> Tensor:
    """(10,) accuracy of the classifier on the images asked for as each class."""
    with torch.inference_mode():
        correct = (classifier.logits(images).argmax(1) == labels).double()
    return torch.stack([correct[labels == k].mean() for k in range(NUM_CLASSES)])


def set_scores(
    classifier: SmallImageClassifier, reference: FeatureReference, images: Tensor, labels: Tensor
) -> tuple[float, float, Tensor]:
    """A class-balanced sample set's scores: the classifier's accuracy against the labels asked for, the Fréchet
    distance to the held-out images, and the per-class accuracy (10,)."""
    accuracy = classifier_accuracy(classifier, images, labels)
    return accuracy, frechet_distance_to(reference, images), per_class_accuracy(classifier, images, labels)
