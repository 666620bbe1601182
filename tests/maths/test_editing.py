"""Inpainting and image-to-image (editing.py) through a GaussianDiffusion: against closed forms with the ideal
denoiser of a correlated Gaussian wrapped as a network, then on a tiny class-conditional Unet (conditions, guidance,
shapes, errors).

SDEdit's closed forms (Meng et al. 2022), for data x_0 ~ N(μ, Σ) and a run that starts at index t from
x_t = α_t x_0 + σ_t ε: an exact sampler returns the data distribution whatever t, so starting from samples of the
data the output has the data's mean and covariance; and the output's cross-covariance with the input is, in the
eigenbasis of Σ (eigenvalue λ),
* a stochastic sampler (x_out ~ p(x_0 | x_t), the reverse SDE): Cov(x_in, x_out) = α² λ² / (α² λ + σ²),
* a deterministic one (the probability-flow ODE maps x_t linearly: x_out = μ + (λ / (α² λ + σ²))^{1/2} (x_t − α μ)):
  Cov(x_in, x_out) = α λ^{3/2} / (α² λ + σ²)^{1/2},
both falling as t (the strength) grows.
"""

from __future__ import annotations

import math

import pytest
import torch
from oracle import CorrelatedGaussian
from torch import Tensor, nn

from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.editing import check_strength, img2img, inpaint, strength_timesteps
from denoising_diffusion.nn import EncoderClassifier, Unet
from denoising_diffusion.noise_aware_classifier import NoiseAwareClassifier
from denoising_diffusion.processes import NoiseSchedule, spaced_timesteps
from denoising_diffusion.samplers import SAMPLERS, SamplerName, sample_repaint

F64 = torch.float64
DATA = CorrelatedGaussian(
    mean=[0.3, -0.2, 0.1, 0.4], cov=[[0.25 * 0.9 ** abs(i - j) for j in range(4)] for i in range(4)], shape=(1, 2, 2)
)
N = 4000


class OracleNet(nn.Module):
    """The ideal ε̂(x_t, t) = (x_t − α_t E[x_0 | x_t]) / σ_t of DATA, as a network a GaussianDiffusion can wrap."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.schedule = schedule
        self.channels = DATA.shape[0]
        self.anchor = nn.Parameter(torch.zeros((), dtype=F64))  # GaussianDiffusion reads its dtype from here

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = self.schedule.alpha_sigma(t[0].item())
        return (x - alpha * DATA.posterior_mean(x, alpha, sigma).to(x.dtype)) / sigma


@pytest.fixture(scope="module")
def oracle_diffusion() -> GaussianDiffusion:
    """The oracle in data space: no [0, 1] mapping, no clipping, float64."""
    schedule = NoiseSchedule.from_name("cosine", 1000)
    return GaussianDiffusion(
        OracleNet(schedule), image_size=(2, 2), timesteps=1000, beta_schedule="cosine", sampling_timesteps=100,
        auto_normalize=False, clip_denoised=False,
    )  # fmt: skip


def closed_form_cross_covariance(alphabar: float, stochastic: bool) -> Tensor:
    """Cov(x_in, x_out) (4, 4) of an exact sampler started at ᾱ = alphabar from data samples (module docstring)."""
    lam, vectors = torch.linalg.eigh(DATA.cov)
    noisy = alphabar * lam + (1 - alphabar)
    diag = alphabar * lam**2 / noisy if stochastic else math.sqrt(alphabar) * lam**1.5 / noisy.sqrt()
    return vectors @ torch.diag(diag) @ vectors.T


# ----- strength -----------------------------------------------------------------------------------------------------


def test_strength_keeps_the_last_entries() -> None:
    """diffusers' convention: keep round(strength · n) of the n timesteps, from the end; halves round up."""
    ts = [90, 70, 50, 30, 10, 0]
    assert strength_timesteps(ts, 0.0) == []
    assert strength_timesteps(ts, 1.0) == ts
    assert strength_timesteps(ts, 0.5) == [30, 10, 0]
    assert strength_timesteps(ts, 0.25) == [10, 0]  # 1.5 -> 2
    assert strength_timesteps(ts, 0.24) == [0]  # 1.44 -> 1
    assert strength_timesteps(ts, 0.05) == []  # 0.3 -> 0: nothing to do
    assert strength_timesteps(list(range(999, -1, -1)), 0.3) == list(range(299, -1, -1))


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, math.inf, "0.5", True, None])
def test_strength_outside_0_1_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="strength must be a number in \\[0, 1\\]"):
        check_strength(bad)


# ----- SDEdit with the oracle ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sampler, steps, stochastic",
    [("ddpm", 250, True), ("dpmpp_2m_sde", 50, True), ("ddim", 100, False), ("dpmpp_2m", 20, False),
     ("heun", 25, False)],
)  # fmt: skip
def test_img2img_keeps_the_data_distribution_and_correlates_as_the_closed_form(
    oracle_diffusion: GaussianDiffusion, sampler: str, steps: int, stochastic: bool
) -> None:
    """Started from N = 4000 samples of the data at strengths 0.2, 0.4, 0.6 (1000 cosine steps, each sampler's own
    spacing), the output has the data's mean (within 0.04, 5 standard errors) and covariance (within 0.03, 5 standard
    errors of an entry of size 0.25), and its cross-covariance with the input matches the closed form at the start
    index t (within 0.025); the correlation falls as the strength grows. Measured: largest cross-covariance error
    0.0125 (dpmpp_2m, heun at 0.2), mean error 0.017, covariance error 0.012; diagonal cross-covariance, e.g.
    ddim 0.23 / 0.18 / 0.13 and ddpm 0.21 / 0.14 / 0.07 against the data's variance 0.25."""
    info = SAMPLERS[SamplerName(sampler)]
    timesteps = spaced_timesteps(oracle_diffusion.schedule, steps, info.spacing)
    correlations = []
    for strength in (0.2, 0.4, 0.6):
        g = torch.Generator().manual_seed(0)
        x_in = DATA.sample(N, g)
        out = img2img(oracle_diffusion, x_in, strength, sampler=sampler, steps=steps, generator=g)
        x, y = x_in.reshape(N, 4), out.reshape(N, 4)
        assert float((y.mean(0) - DATA.mean).abs().max()) < 0.04
        assert float((torch.cov(y.T) - DATA.cov).abs().max()) < 0.03
        cross = (x - x.mean(0)).T @ (y - y.mean(0)) / (N - 1)
        t = strength_timesteps(timesteps, strength)[0]
        expected = closed_form_cross_covariance(oracle_diffusion.schedule.alphabar(t), stochastic)
        assert float((cross - expected).abs().max()) < 0.025, (strength, t, cross, expected)
        correlations.append(float(cross.diagonal().mean()))
    assert correlations[0] > correlations[1] > correlations[2], correlations


def test_img2img_is_q_sample_then_the_sampler_on_the_kept_steps(oracle_diffusion: GaussianDiffusion) -> None:
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε with ε the generator's first draw (ᾱ from the betas by a cumulative product),
    then the sampler over the kept suffix of its timesteps, drawing on from the same generator."""
    x_in = DATA.sample(8, torch.Generator().manual_seed(1))
    timesteps = spaced_timesteps(oracle_diffusion.schedule, 10, "linspace")
    kept = timesteps[-3:]  # 0.3 · 10
    alphabar = float(torch.cumprod(1 - oracle_diffusion.schedule.betas, 0)[kept[0]])
    for sampler, options in [("ddim", {"eta": 0.5}), ("ddpm", {"variance": "fixed_large"})]:
        out = img2img(oracle_diffusion, x_in, 0.3, sampler=sampler, steps=10, spacing="linspace",
                      generator=torch.Generator().manual_seed(2), **options)  # fmt: skip
        g = torch.Generator().manual_seed(2)
        x_t = math.sqrt(alphabar) * x_in + math.sqrt(1 - alphabar) * torch.randn(x_in.shape, generator=g, dtype=F64)
        fn = SAMPLERS[SamplerName(sampler)].fn
        expected = fn(oracle_diffusion.denoiser(), x_t, oracle_diffusion.schedule, kept, generator=g, **options)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


# ----- RePaint through the diffusion --------------------------------------------------------------------------------


def test_inpaint_runs_repaint_on_the_models_chain(oracle_diffusion: GaussianDiffusion) -> None:
    """inpaint(diffusion, ...) is sample_repaint on the model's denoiser and spaced chain, started from x_T drawn
    first from the generator, with the model's variance: the same numbers, bit for bit (the sampler itself is checked
    against closed forms in test_repaint.py)."""
    images = DATA.sample(6, torch.Generator().manual_seed(3))
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).expand(6, 1, 2, 2)
    out = inpaint(oracle_diffusion, images, mask, steps=20, jump_length=4, resample=3,
                  generator=torch.Generator().manual_seed(4))  # fmt: skip
    g = torch.Generator().manual_seed(4)
    x_T = torch.randn(images.shape, generator=g, dtype=F64)
    expected = sample_repaint(oracle_diffusion.denoiser(), x_T, oracle_diffusion.schedule,
                              spaced_timesteps(1000, 20, "linspace"), known=images, mask=mask, jump_length=4,
                              resample=3, variance="fixed_small", generator=g)  # fmt: skip
    assert torch.equal(out, expected)
    assert torch.equal(out[:, :, 0, 0], images[:, :, 0, 0]) and torch.equal(out[:, :, 1, 1], images[:, :, 1, 1])


# ----- a class-conditional Unet -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conditional() -> GaussianDiffusion:
    torch.manual_seed(0)
    unet = Unet(dim=8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8, num_classes=3)
    return GaussianDiffusion(unet, image_size=8, timesteps=20, sampling_timesteps=5, class_names=["a", "b", "c"])


def images_and_mask(batch: int = 3, per_channel: bool = False) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(5)
    images = torch.rand(batch, 3, 8, 8, generator=g)
    mask = (torch.rand(batch, 3 if per_channel else 1, 8, 8, generator=g) < 0.5).float()
    return images, mask


@pytest.mark.parametrize("per_channel", [False, True])
def test_inpaint_keeps_the_known_pixels_with_conditions_and_guidance(
    conditional: GaussianDiffusion, per_channel: bool
) -> None:
    """Known pixels come back as the [0, 1] → [−1, 1] → [0, 1] round trip of the input, exactly; the rest is new.
    Classes by tensor, int or name, guided and rescaled; the callback sees every reverse step, the trajectory has
    one frame more; the same generator gives the same images; the network's training mode is restored."""
    images, mask = images_and_mask(per_channel=per_channel)
    conditional.train()
    steps: list = []
    kwargs = dict(jump_length=2, resample=3, guidance_scale=3.0, guidance_rescale=0.5)
    out = inpaint(conditional, images, mask, classes=torch.tensor([0, 1, 2]), callback=steps.append,
                  generator=torch.Generator().manual_seed(0), **kwargs)  # fmt: skip
    assert conditional.model.training
    assert out.shape == images.shape and out.dtype == images.dtype
    keep = mask.bool().expand_as(images)
    round_trip = conditional.unnormalize(conditional.normalize(images)).clamp(0, 1)
    assert torch.equal(out[keep], round_trip[keep])
    assert (out[~keep] - images[~keep]).abs().max() > 0.1
    assert len(steps) == 5 + 2 * 2 * 2  # steps + (r − 1)·j·P with P = 2 jump points (0 and 2)
    again = inpaint(conditional, images, mask, classes=torch.tensor([0, 1, 2]), return_all_timesteps=True,
                    generator=torch.Generator().manual_seed(0), **kwargs)  # fmt: skip
    assert again.shape == (3, 5 + 8 + 1, 3, 8, 8) and torch.equal(again[:, -1], out)
    by_name = inpaint(conditional, images, mask, classes="b", jump_length=2, resample=1)
    by_index = inpaint(conditional, images, mask, classes=1, jump_length=2, resample=1, steps=3, variance="fixed_large")
    assert by_name.shape == by_index.shape == images.shape


@pytest.mark.parametrize("sampler", [name.value for name, info in SAMPLERS.items() if not info.needs_sde])
def test_img2img_strength_one_is_sample_and_zero_is_the_input(conditional: GaussianDiffusion, sampler: str) -> None:
    """Strength 1 is diffusion.sample with the same generator, bit for bit (conditions and guidance included);
    strength 0 returns the input itself; in between, k of the steps run and the trajectory has k + 1 frames."""
    images, _ = images_and_mask()
    condition = dict(classes=[0, 2, 1], guidance_scale=2.0)
    full = img2img(conditional, images, 1.0, sampler=sampler, steps=4, generator=torch.Generator().manual_seed(7),
                   **condition)  # fmt: skip
    reference = conditional.sample(3, sampler=sampler, steps=4, generator=torch.Generator().manual_seed(7), **condition)
    assert torch.equal(full, reference)
    assert torch.equal(img2img(conditional, images, 0.0, sampler=sampler, **condition), images)
    assert torch.equal(img2img(conditional, images, 0.0, return_all_timesteps=True, **condition), images[:, None])
    part = img2img(conditional, images, 0.5, sampler=sampler, steps=4, return_all_timesteps=True, **condition)
    assert part.shape == (3, 2 + 1, 3, 8, 8) and 0 <= float(part.min()) and float(part.max()) <= 1


def test_img2img_binds_sampler_options_as_sample_does(conditional: GaussianDiffusion) -> None:
    images, _ = images_and_mask()
    for options in ({"eta": 1.0}, {"eta": None}):
        assert img2img(conditional, images, 0.6, sampler="ddim", classes=0, **options).shape == images.shape
    with pytest.raises(
        ValueError, match="sampler 'ddpm' takes no option 'eta' .*; img2img's other keywords are the conditions classes"
    ):
        img2img(conditional, images, 0.6, sampler="ddpm", classes=0, eta=0.5)
    with pytest.raises(ValueError, match="takes no option 'clases'"):
        img2img(conditional, images, 0.6, sampler="ddim", clases=0)
    with pytest.raises(ValueError, match="sampler option eta='lots'"):
        img2img(conditional, images, 0.6, sampler="ddim", classes=0, eta="lots")


@pytest.mark.parametrize(
    "images, mask, kwargs, message",
    [
        (torch.rand(2, 3, 8, 4), torch.ones(2, 1, 8, 4), {}, "images must have shape \\(B, 3, 8, 8\\)"),
        (torch.rand(3, 8, 8), torch.ones(1, 8, 8), {}, "images must have shape"),
        (torch.rand(0, 3, 8, 8), torch.ones(0, 1, 8, 8), {}, "with B >= 1"),
        (
            torch.rand(2, 3, 8, 8),
            torch.ones(3, 1, 8, 8),
            {},
            "mask must have shape \\(2, 1, 8, 8\\) or \\(2, 3, 8, 8\\)",
        ),
        (torch.rand(2, 3, 8, 8), torch.ones(2, 2, 8, 8), {}, "mask must have shape"),
        (torch.rand(2, 3, 8, 8), torch.ones(2, 8, 8), {}, "mask must have shape"),
        (torch.rand(2, 3, 8, 8), torch.full((2, 1, 8, 8), 0.7), {}, "mask must hold only 0 .fill. and 1 .keep."),
        (torch.rand(2, 3, 8, 8), torch.ones(2, 1, 8, 8), {"jump_length": 5}, "jump_length=5 leaves no room"),
        (torch.rand(2, 3, 8, 8), torch.ones(2, 1, 8, 8), {"variance": "tiny"}, "sampler option variance='tiny'"),
        (torch.rand(2, 3, 8, 8), torch.ones(2, 1, 8, 8), {"classes": None}, "built with num_classes=3: pass classes="),
        (torch.rand(2, 3, 8, 8), torch.ones(2, 1, 8, 8), {"classes": [0, 1, 2]}, "classes must have shape \\(2,\\)"),
    ],
)
def test_inpaint_errors(conditional: GaussianDiffusion, images, mask, kwargs: dict, message: str) -> None:
    kwargs = {"classes": 0, "jump_length": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        inpaint(conditional, images, mask, **kwargs)


def test_img2img_errors(conditional: GaussianDiffusion) -> None:
    images, _ = images_and_mask()
    with pytest.raises(ValueError, match="strength must be a number in \\[0, 1\\]"):
        img2img(conditional, images, 1.2, classes=0)
    with pytest.raises(ValueError, match="images must have shape"):
        img2img(conditional, images[:, :1], 0.5, classes=0)
    with pytest.raises(ValueError, match="unknown sampler 'plms'"):
        img2img(conditional, images, 0.5, sampler="plms", classes=0)
    with pytest.raises(ValueError, match="built with num_classes=3: pass classes="):
        img2img(conditional, images, 0.5)  # a class-conditional model needs its classes, also at strength 0


def test_classifier_guidance_reaches_both_edits(conditional: GaussianDiffusion) -> None:
    """classifier= and classifier_scale= act as in sample: img2img at strength 1 equals the classifier-guided
    sample bit for bit; inpaint keeps its known pixels under it; the classifier's training mode is restored."""
    small = dict(dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    classifier = NoiseAwareClassifier.for_diffusion(EncoderClassifier(8, num_classes=3, **small), conditional)
    classifier.train()
    images, mask = images_and_mask()
    guided = dict(classes=[0, 1, 2], classifier=classifier, classifier_scale=5.0)
    full = img2img(conditional, images, 1.0, sampler="ddim", generator=torch.Generator().manual_seed(1), **guided)
    reference = conditional.sample(3, sampler="ddim", generator=torch.Generator().manual_seed(1), **guided)
    assert torch.equal(full, reference)
    plain = conditional.sample(3, sampler="ddim", generator=torch.Generator().manual_seed(1), classes=[0, 1, 2])
    assert not torch.equal(full, plain)
    out = inpaint(conditional, images, mask, jump_length=2, resample=2, **guided)
    keep = mask.bool().expand_as(images)
    assert torch.equal(out[keep], conditional.unnormalize(conditional.normalize(images)).clamp(0, 1)[keep])
    assert classifier.training


def test_the_methods_of_gaussian_diffusion_are_the_editing_functions(conditional: GaussianDiffusion) -> None:
    images, mask = images_and_mask()
    a = conditional.inpaint(images, mask, classes=1, steps=4, jump_length=2, resample=2,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
    b = inpaint(conditional, images, mask, classes=1, steps=4, jump_length=2, resample=2,
                generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(a, b)
    c = conditional.img2img(images, 0.5, classes=1, sampler="ddim", steps=4, generator=torch.Generator().manual_seed(1))
    d = img2img(
        conditional, images, 0.5, classes=1, sampler="ddim", steps=4, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(c, d)
