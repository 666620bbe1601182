"""Classifier guidance: against the exact class posterior of Gaussian classes (no training), and with a noise-aware
classifier the Trainer trains, saves and the pipeline rebuilds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from oracle import ClassConditionalGaussians
from torch.utils.data import TensorDataset
from trainer_helpers import isolated_accelerate, make_trainer  # noqa: F401 (autouse fixture)

from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.guidance import classifier_guidance
from denoising_diffusion.nn import EncoderClassifier, Unet
from denoising_diffusion.noise_aware_classifier import NoiseAwareClassifier
from denoising_diffusion.pipeline import load_pipeline
from denoising_diffusion.processes import NoiseSchedule, spaced_timesteps
from denoising_diffusion.samplers import SAMPLERS, SamplerName

# Two overlapping classes in 2-D: the unguided mixture puts a fair share of class 0's requests in class 1.
DATA = ClassConditionalGaussians(weights=[0.5, 0.5], means=[[-0.5, 0.0], [0.5, 0.0]], stds=[0.4, 0.4])
SCHEDULE = NoiseSchedule.from_name("cosine", 200)


def exact_log_prob(labels: torch.Tensor):
    """log p(y | x_t) of the Gaussian classes, in closed form: the classifier an infinitely good training reaches."""

    def log_prob(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = SCHEDULE.alpha_sigma(t[0].item())
        return DATA.class_log_posterior(x_t, alpha, sigma).gather(1, labels[:, None].to(x_t.device))[:, 0]

    return log_prob


def test_scale_one_with_the_exact_posterior_is_the_conditional_model() -> None:
    """∇ log p(x_t) + ∇ log p(y | x_t) = ∇ log p(x_t | y): guiding the unconditional denoiser with the exact class
    posterior at s = 1 gives the class-conditional ε̂ (and x̂_0) exactly; s = 0 is the identity."""
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(64, 2, 1, 1, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 2, (64,), generator=g)
    uncond = DATA.unconditional_denoiser(SCHEDULE)
    for t in (5, 60, 150, 199):
        tt = torch.full((64,), t)
        guided = classifier_guidance(uncond, exact_log_prob(labels), SCHEDULE, 1.0)(x_t, tt)
        cond = DATA.denoiser(SCHEDULE, labels)(x_t, tt)
        torch.testing.assert_close(guided.eps, cond.eps, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(guided.x0, cond.x0, rtol=1e-9, atol=1e-9)
        assert torch.equal(classifier_guidance(uncond, exact_log_prob(labels), SCHEDULE, 0.0)(x_t, tt).eps,
                           uncond(x_t, tt).eps)  # fmt: skip


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "heun", "ddpm"])
def test_guidance_steers_samples_into_the_requested_class(name: str) -> None:
    """The share of class-0 requests that land on class 0's side (x_0 < 0) rises with s: about 0.5 unguided, the
    conditional Gaussian's Φ(0.5/0.4) = 0.894 at s = 1 (exact guidance is the conditional model), above 0.99 at
    s = 10. N = 4000 per scale: the binomial standard error is below 0.008."""
    info = SAMPLERS[SamplerName(name)]
    n = 4000
    labels = torch.zeros(n, dtype=torch.long)
    timesteps = spaced_timesteps(SCHEDULE, min(info.recommended_steps, 200), info.spacing)
    shares = {}
    for scale in (0.0, 1.0, 10.0):
        denoiser = classifier_guidance(DATA.unconditional_denoiser(SCHEDULE), exact_log_prob(labels), SCHEDULE, scale)
        g = torch.Generator().manual_seed(1)
        x_T = torch.randn(n, 2, 1, 1, generator=g, dtype=torch.float64)
        x_0 = info.fn(denoiser, x_T, SCHEDULE, timesteps, generator=g, **info.bind({}, {"eta": 0.0}))
        shares[scale] = float((x_0[:, 0, 0, 0] < 0).double().mean())
    conditional = 0.5 * (1 + math.erf(0.5 / 0.4 / math.sqrt(2)))
    assert abs(shares[0.0] - 0.5) < 0.04, shares
    assert abs(shares[1.0] - conditional) < 0.04, shares
    assert shares[10.0] > 0.99 and shares[0.0] < shares[1.0] < shares[10.0], shares


# ----- a trained noise-aware classifier ----------------------------------------------------------------------------

SMALL = {"dim_mults": (1, 2), "resnet_block_groups": 4, "attn_heads": 2, "attn_dim_head": 8}


def tiny_diffusion(**unet_kwargs) -> GaussianDiffusion:
    torch.manual_seed(0)
    return GaussianDiffusion(Unet(8, channels=1, **SMALL, **unet_kwargs), image_size=8, timesteps=20)


def dark_and_bright(n: int = 64) -> TensorDataset:
    """Class 0: dark images (0.25 ± noise), class 1: bright ones (0.75 ± noise), 1x8x8."""
    g = torch.Generator().manual_seed(2)
    labels = torch.arange(n) % 2
    images = (0.25 + 0.5 * labels.float()).view(n, 1, 1, 1) + 0.1 * torch.randn(n, 1, 8, 8, generator=g)
    return TensorDataset(images.clamp(0, 1), labels)


def test_a_trained_classifier_classifies_noisy_images_and_its_gradient_reaches_the_sampler(tmp_path: Path) -> None:
    diffusion = tiny_diffusion()
    torch.manual_seed(0)
    classifier = NoiseAwareClassifier.for_diffusion(
        EncoderClassifier(8, num_classes=2, channels=1, **SMALL), diffusion, class_names=["dark", "bright"]
    )
    data = dark_and_bright()
    trainer = make_trainer(classifier, data, tmp_path / "clf", train_num_steps=40, save_and_sample_every=40,
                           train_batch_size=16, train_lr=3e-3)  # fmt: skip
    trainer.train()
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["loss.csv", "model-1.pt"]  # no sample grid
    loaded = load_pipeline(tmp_path / "clf" / "model-1.pt")
    assert type(loaded) is NoiseAwareClassifier and loaded.class_names == ["dark", "bright"]
    images, labels = data.tensors
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 10, (len(labels),), generator=g)  # the less noisy half of the chain
    ab = loaded.schedule.alphas_cumprod[t].view(-1, 1, 1, 1).float()
    x_t = ab.sqrt() * (images * 2 - 1) + (1 - ab).sqrt() * torch.randn(images.shape, generator=g)
    with torch.no_grad():
        accuracy = float((loaded.logits(x_t, t).argmax(1) == labels).float().mean())
    assert accuracy > 0.8, accuracy  # chance is 0.5
    plain = diffusion.sample(4, steps=5, sampler="ddim", generator=torch.Generator().manual_seed(4))
    guided = diffusion.sample(4, steps=5, sampler="ddim", generator=torch.Generator().manual_seed(4),
                              classes="bright", classifier=loaded, classifier_scale=5.0)  # fmt: skip
    assert (guided - plain).abs().max() > 1e-3  # the gradient reached the sampler
    assert loaded.training is False  # sampling left the classifier in the mode it found it in


def test_classifier_guidance_combines_with_classifier_free_guidance() -> None:
    diffusion = tiny_diffusion(num_classes=2)
    classifier = NoiseAwareClassifier.for_diffusion(EncoderClassifier(8, num_classes=2, channels=1, **SMALL), diffusion)
    out = diffusion.sample(
        3, classes=[0, 1, 1], guidance_scale=2.0, classifier=classifier, classifier_scale=3.0, steps=3
    )
    assert out.shape == (3, 1, 8, 8) and bool(torch.isfinite(out).all())


def test_classifier_guidance_errors() -> None:
    diffusion = tiny_diffusion()
    classifier = NoiseAwareClassifier.for_diffusion(EncoderClassifier(8, num_classes=2, channels=1, **SMALL), diffusion)
    with pytest.raises(ValueError, match="classifier guidance needs classes="):
        diffusion.sample(2, classifier=classifier)
    with pytest.raises(ValueError, match="classifier_scale was given without a classifier"):
        diffusion.sample(2, classifier_scale=3.0)
    with pytest.raises(ValueError, match=r"class label 2 is outside \[0, 2\)"):
        diffusion.sample(2, classes=2, classifier=classifier)
    other = GaussianDiffusion(Unet(8, channels=1, **SMALL), image_size=8, timesteps=20, beta_schedule="linear")
    with pytest.raises(ValueError, match="its noise schedule .* is not the diffusion's"):
        other.sample(2, classes=0, classifier=classifier)
    three = tiny_diffusion(num_classes=3)
    with pytest.raises(ValueError, match="it has 2 classes, the diffusion 3"):
        three.sample(2, classes=0, classifier=classifier)
    with pytest.raises(ValueError, match="must be a NoiseAwareClassifier"):
        diffusion.sample(2, classes=0, classifier=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="a classifier trains on labelled batches"):
        classifier(torch.rand(2, 1, 8, 8))
