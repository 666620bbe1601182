"""The noise-aware classifier (Dhariwal & Nichol 2021, §4.1) against the thing itself, not its own buffers:

* the noisy images it trains on are draws of the diffusion's own q(x_t | x_0) (GaussianDiffusion.q_sample) at
  uniform t over every index, in the diffusion's data range;
* its probabilities are a softmax over the classes, one sample at a time;
* class names keep their index order (through a checkpoint, and in guidance, where the classifier's names, not
  the diffusion's, give the labels it is asked about);
* a classifier of another image size cannot guide.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from denoising_diffusion import (
    EncoderClassifier,
    GaussianDiffusion,
    NoiseAwareClassifier,
    Unet,
    load_pipeline,
    save_pipeline,
)

SMALL = {"dim_mults": (1, 2), "resnet_block_groups": 4, "attn_heads": 2, "attn_dim_head": 8}
T = 10


class Spy(nn.Module):
    """A classifier network that records the (x_t, t) it is trained on and returns fixed logits (two classes)."""

    channels, num_classes = 1, 2

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.3, -0.2]))
        self.seen: list[tuple[Tensor, Tensor]] = []

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        self.seen.append((x_t.detach().clone(), t.detach().clone()))
        return self.bias.expand(len(x_t), 2)


def diffusion(beta_schedule: str = "cosine", auto_normalize: bool = True, **kwargs) -> GaussianDiffusion:
    torch.manual_seed(0)
    net = Unet(8, channels=1, **SMALL, **kwargs)
    return GaussianDiffusion(net, image_size=8, timesteps=T, beta_schedule=beta_schedule, auto_normalize=auto_normalize)


@pytest.mark.parametrize("beta_schedule, auto_normalize", [("cosine", True), ("linear", True), ("cosine", False)])
def test_it_trains_on_the_diffusions_own_q_xt_given_x0(beta_schedule: str, auto_normalize: bool) -> None:
    """Constant images x (0.75 everywhere), 4000 of them 1x8x8: for each t the pixels of the x_t the network sees
    have the mean and standard deviation of the diffusion's q_sample(x_0, t, ε) (mean: ε = 0; std: ε = 1 minus
    that), x_0 being the image in the diffusion's range; every index 0 .. T−1 is drawn, about uniformly. 6400+
    pixels per index: the mean's standard error is below 0.013 σ_t, the std's below 0.9 %."""
    d = diffusion(beta_schedule, auto_normalize)
    spy = Spy()
    classifier = NoiseAwareClassifier.for_diffusion(spy, d)
    n = 4000
    images = torch.full((n, 1, 8, 8), 0.75)
    torch.manual_seed(1)
    classifier((images, torch.zeros(n, dtype=torch.long))).backward()
    x_t, t = spy.seen[-1]
    counts = torch.bincount(t, minlength=T)
    assert len(counts) == T and int(counts.min()) > 0.8 * n / T, counts  # uniform over 0 .. T−1
    x_0 = d.normalize(images[:1])
    for index in range(T):
        times = torch.tensor([index])
        mean = d.q_sample(x_0, times, torch.zeros_like(x_0))[0, 0, 0, 0]
        std = d.q_sample(x_0, times, torch.ones_like(x_0))[0, 0, 0, 0] - mean
        pixels = x_t[t == index].double().flatten()
        assert abs(float(pixels.mean() - mean)) < 5 * float(std) / len(pixels) ** 0.5 + 1e-6, index
        assert abs(float(pixels.std()) / float(std) - 1) < 0.05, index


def test_log_prob_is_the_log_softmax_over_the_classes_of_each_sample() -> None:
    """log f(y | x_t) = ℓ_y − log Σ_k exp ℓ_k of the sample's own logits ℓ: normalised over the classes, and the
    same whatever else is in the batch."""

    class Logits(nn.Module):
        channels, num_classes = 1, 3

        def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
            return torch.stack([x_t.mean((1, 2, 3)), 2 * x_t.amax((1, 2, 3)), t.float() / 5], dim=1)

    classifier = NoiseAwareClassifier(Logits(), image_size=8, timesteps=T)
    g = torch.Generator().manual_seed(2)
    x_t, t = torch.randn(5, 1, 8, 8, generator=g), torch.tensor([0, 3, 9, 4, 7])
    logits = Logits()(x_t, t).double()
    for y in range(3):
        labels = torch.full((5,), y)
        expected = logits[:, y] - logits.exp().sum(1).log()
        torch.testing.assert_close(classifier.log_prob(x_t, t, labels).double(), expected, rtol=1e-5, atol=1e-6)
        alone = classifier.log_prob(x_t[2:3], t[2:3], labels[2:3])
        torch.testing.assert_close(alone[0], classifier.log_prob(x_t, t, labels)[2], rtol=1e-6, atol=1e-6)
    total = sum(classifier.log_prob(x_t, t, torch.full((5,), y)).exp() for y in range(3))
    torch.testing.assert_close(total, torch.ones(5), rtol=1e-5, atol=1e-6)


class Recording(NoiseAwareClassifier):
    """A NoiseAwareClassifier that records the labels guidance asks it about."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[Tensor] = []

    def log_prob(self, x_t: Tensor, t: Tensor, classes: Tensor) -> Tensor:
        self.asked.append(classes.clone())
        return super().log_prob(x_t, t, classes)


class RecordingUnet(Unet):
    """A class-conditional Unet that records the labels it is given."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.labels: list[Tensor] = []

    def forward(self, x, time, *args, classes=None, **kwargs):
        self.labels.append(classes.clone())
        return super().forward(x, time, *args, classes=classes, **kwargs)


def test_class_names_keep_their_index_order_through_a_checkpoint_and_in_guidance(tmp_path: Path) -> None:
    """Names in an order that is not sorted: 'zebra' is class 0 of the classifier wherever it goes. Guiding a
    class-conditional diffusion whose own names are in another order, classes='zebra' asks the classifier about its
    label 0 and gives the diffusion's network its label 1."""
    d = diffusion()
    names = ["zebra", "ant"]
    classifier = NoiseAwareClassifier.for_diffusion(EncoderClassifier(8, num_classes=2, channels=1, **SMALL), d, names)
    assert classifier.class_names == names
    save_pipeline(classifier, tmp_path / "clf.pt")
    assert load_pipeline(tmp_path / "clf.pt").class_names == names

    torch.manual_seed(0)
    net = RecordingUnet(8, channels=1, num_classes=2, **SMALL)
    conditional = GaussianDiffusion(net, image_size=8, timesteps=T, class_names=["ant", "zebra"])
    recording = Recording(EncoderClassifier(8, num_classes=2, channels=1, **SMALL), image_size=8, timesteps=T,
                          class_names=names)  # fmt: skip
    conditional.sample(3, classes="zebra", classifier=recording, classifier_scale=2.0, steps=2, sampler="ddim")
    assert recording.asked and all(torch.equal(y, torch.zeros(3, dtype=torch.long)) for y in recording.asked)
    assert net.labels and all(torch.equal(y, torch.ones(3, dtype=torch.long)) for y in net.labels)


def test_a_classifier_of_another_image_size_cannot_guide() -> None:
    d = diffusion()
    other = NoiseAwareClassifier(EncoderClassifier(8, num_classes=2, channels=1, **SMALL), image_size=16, timesteps=T)
    with pytest.raises(ValueError, match=r"it classifies \(1, 16, 16\) images, the diffusion makes \(1, 8, 8\)"):
        d.sample(2, classes=0, classifier=other, steps=2)
