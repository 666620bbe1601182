"""LatentDiffusion (latent/diffusion.py): the scale factor, saving and rebuilding with every sampler, decoding without
clamping first, the frozen autoencoder in a training checkpoint, editing in pixel space, and the errors of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from latent_helpers import SIZE, tiny_autoencoder, tiny_latent_diffusion
from trainer_helpers import isolated_accelerate, make_trainer  # noqa: F401 (autouse fixture)

from denoising_diffusion import BuiltinShapes, GaussianDiffusion, load_checkpoint, load_pipeline, save_pipeline
from denoising_diffusion.checkpoint import CheckpointError, save_checkpoint
from denoising_diffusion.latent import LatentDiffusion, latent_mask
from denoising_diffusion.nn.autoencoder import DiagonalGaussian
from denoising_diffusion.samplers import SAMPLERS

IMAGES = BuiltinShapes(8, SIZE).images  # (8, 3, 16, 16) in [0, 1]


def test_posterior_kl_and_sample_follow_their_closed_forms() -> None:
    """KL(N(μ, σ²) ‖ N(0, 1)) summed per sample against torch.distributions; z = μ + σ ε with ε from the generator."""
    moments = torch.randn(3, 4, 2, 2)
    posterior = DiagonalGaussian.from_moments(moments)
    q = torch.distributions.Normal(moments[:, :2], torch.exp(0.5 * moments[:, 2:]))
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(posterior.kl(), expected)
    noise = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(5))
    drawn = posterior.sample(torch.Generator().manual_seed(5))
    torch.testing.assert_close(drawn, moments[:, :2] + torch.exp(0.5 * moments[:, 2:]) * noise)


def test_the_estimated_scale_makes_the_training_latents_unit_variance() -> None:
    """s = 1/std of the latents, so s·z of fresh draws (what forward() trains on) has variance 1. The encoder's
    posterior means are scaled up so that its latents spread far from unit variance (s = 1 would not pass)."""
    autoencoder = tiny_autoencoder()
    with torch.no_grad():
        autoencoder.encoder[-1].weight[:4].mul_(8.0)  # output channels 0-3: μ (4-7: log σ², left alone)
    latent = tiny_latent_diffusion(autoencoder, scale_factor=None)
    assert latent.needs_data_statistics
    fitted = latent.fit_data_statistics(IMAGES.repeat(8, 1, 1, 1))
    assert fitted["scale_factor"] == latent.scale_factor == latent.config["scale_factor"]
    assert not latent.needs_data_statistics and latent.scale_factor < 0.5
    torch.manual_seed(1)
    drawn = latent.scaled(latent.training_posterior(IMAGES.repeat(8, 1, 1, 1)).sample())
    assert abs(float(drawn.std()) - 1.0) < 0.03


def _with_process(name: str) -> str:
    """ddpm serves every sampler except those that need an SDE and the probability-flow ODE, which run on vp."""
    return "vp" if SAMPLERS[name].needs_sde or SAMPLERS[name].adaptive else "ddpm"


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> dict[str, tuple[LatentDiffusion, LatentDiffusion]]:
    """(model, the same rebuilt from one pipeline file) for the ddpm and vp processes."""
    root = tmp_path_factory.mktemp("latent")
    pairs = {}
    for process in ("ddpm", "vp"):
        model = tiny_latent_diffusion(process=process).eval()
        save_pipeline(model, root / f"{process}.pt")
        pairs[process] = (model, load_pipeline(root / f"{process}.pt"))
    return pairs


@pytest.mark.parametrize("sampler", [name.value for name in SAMPLERS])
def test_a_saved_latent_model_rebuilds_and_samples_the_same_with_every_sampler(saved_models, sampler: str) -> None:
    model, rebuilt = saved_models[_with_process(sampler)]
    assert type(rebuilt) is LatentDiffusion and rebuilt.scale_factor == model.scale_factor
    options = {"steps": 2, "rtol": 1e-2, "atol": 1e-2} if SAMPLERS[sampler].adaptive else {"steps": 3}
    a = model.sample(2, sampler=sampler, generator=torch.Generator().manual_seed(0), **options)
    b = rebuilt.sample(2, sampler=sampler, generator=torch.Generator().manual_seed(0), **options)
    assert a.shape == (2, 3, SIZE, SIZE) and 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_samples_are_decoded_from_unclamped_latents(monkeypatch) -> None:
    """The decoder receives the sampler's latents exactly (divided by s), beyond [−1, 1] where they lie there: no
    clamp in latent space (clip_denoised=False, no output clamp), only after decoding."""
    latent = tiny_latent_diffusion(scale_factor=0.25).eval()
    seen: list[torch.Tensor] = []
    decode = latent.autoencoder.decode
    monkeypatch.setattr(latent.autoencoder, "decode", lambda z: seen.append(z) or decode(z))
    raw = latent.diffusion.sample(2, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0))
    latent.sample(2, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0))
    assert float(raw.abs().max()) > 1.5
    torch.testing.assert_close(seen[0], raw / 0.25, rtol=0, atol=0)


def test_encode_and_decode_are_the_scaling_and_its_inverse_with_the_shift(monkeypatch) -> None:
    """encode(x) = s (μ − b) (with sample=True: s (μ + σ ε − b), ε from the generator) and decode(z̃) gives the decoder
    z̃/s + b, so decode(encode(x)) = D(μ) clamped; written out with s = 0.25 and an autoencoder that declares a shift
    b = 0.7, as SD3's VAE does (every other test has b = 0, where a dropped shift is invisible)."""
    autoencoder = tiny_autoencoder().eval()
    autoencoder.shift_factor = 0.7
    latent = tiny_latent_diffusion(autoencoder, scale_factor=0.25).eval()
    assert latent.shift_factor == 0.7
    with torch.no_grad():
        posterior = autoencoder.encode(IMAGES[:2])
    torch.testing.assert_close(latent.encode(IMAGES[:2]), 0.25 * (posterior.mean - 0.7))
    noise = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(4))
    drawn = latent.encode(IMAGES[:2], sample=True, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(drawn, 0.25 * (posterior.mean + posterior.std * noise - 0.7))
    seen: list[torch.Tensor] = []
    decode = autoencoder.decode

    def recorded(z: torch.Tensor) -> torch.Tensor:
        seen.append(z)
        return decode(z)

    monkeypatch.setattr(autoencoder, "decode", recorded)
    z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(5))
    latent.decode(z)
    torch.testing.assert_close(seen[0], z / 0.25 + 0.7)
    with torch.no_grad():
        torch.testing.assert_close(latent.decode(latent.encode(IMAGES[:2])), decode(posterior.mean).clamp(0, 1))


@pytest.mark.parametrize("auto_normalize,clip_denoised", [(True, False), (False, True)])
def test_a_diffusion_that_normalizes_or_clips_is_refused_each_alone(auto_normalize: bool, clip_denoised: bool) -> None:
    """Latents are not images: a diffusion that maps its data from [0, 1] or clamps x̂_0 to [−1, 1] is refused, each
    setting on its own (bad_input's case has both on)."""
    diffusion = GaussianDiffusion(latent_unet(4), image_size=4, timesteps=10, auto_normalize=auto_normalize,
                                  clip_denoised=clip_denoised)  # fmt: skip
    with pytest.raises(ValueError, match="auto_normalize=False, clip_denoised=False"):
        LatentDiffusion(tiny_autoencoder(), diffusion)


def test_the_frozen_autoencoder_is_saved_once_with_the_network_and_rebuilds_from_the_checkpoint(tmp_path) -> None:
    """A Trainer step trains the diffusion's network only; the checkpoint names the network's place and holds the
    autoencoder among the parts, and load_pipeline rebuilds the whole, scale factor included, from the file alone."""
    latent = tiny_latent_diffusion(scale_factor=None)
    frozen = {k: v.clone() for k, v in latent.autoencoder.state_dict().items()}
    network = {k: v.clone() for k, v in latent.model.state_dict().items()}
    make_trainer(latent, BuiltinShapes(16, SIZE), tmp_path / "r", train_num_steps=2, num_samples=0).train()
    assert all(torch.equal(frozen[k], v) for k, v in latent.autoencoder.state_dict().items())
    assert not all(torch.equal(network[k], v) for k, v in latent.model.state_dict().items())
    checkpoint = load_checkpoint(tmp_path / "r" / "model-1.pt")
    assert checkpoint["network_path"] == "diffusion.model"
    assert set(checkpoint["parts"]) == {f"autoencoder.{k}" for k in frozen}
    assert checkpoint["config"]["scale_factor"] == latent.scale_factor is not None
    rebuilt = load_pipeline(tmp_path / "r" / "model-1.pt", use_ema=False)
    for name, tensor in latent.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[name], tensor, rtol=0, atol=0)
    # a file without the autoencoder's weights (format 2: the network only) is refused, not decoded with random ones
    old = {k: v for k, v in checkpoint.items() if k not in ("parts", "network_path")}
    save_checkpoint(tmp_path / "old.pt", {**old, "format_version": 2})
    with pytest.raises(CheckpointError, match="cannot decode without its autoencoder"):
        load_pipeline(tmp_path / "old.pt")


def test_conditions_and_guidance_pass_through_to_the_latent_sampler() -> None:
    latent = tiny_latent_diffusion(num_classes=3).eval()
    options = dict(sampler="dpmpp_2m", steps=3, classes=torch.tensor([0, 2]), guidance_scale=3.0)
    images = latent.sample(2, generator=torch.Generator().manual_seed(0), **options)
    latents = latent.diffusion.sample(2, generator=torch.Generator().manual_seed(0), **options)
    torch.testing.assert_close(images, latent.decode(latents), rtol=0, atol=0)


def test_a_pixel_mask_keeps_a_latent_cell_only_when_its_whole_block_is_kept() -> None:
    keep = torch.ones(1, 3, 8, 8, dtype=torch.bool)
    keep[0, 1, 5, 2] = False  # one channel of one pixel, in the block of latent cell (1, 0) at f = 4
    expected = torch.tensor([[[[True, True], [False, True]]]])
    assert torch.equal(latent_mask(keep, 4), expected)


def test_inpainting_keeps_the_encoded_latents_of_the_kept_region() -> None:
    """RePaint in latent space ends, in the kept cells, exactly at the scaled posterior mean of the image."""
    latent = tiny_latent_diffusion().eval()
    mask = torch.ones(2, 1, SIZE, SIZE)
    mask[:, :, :5, :] = 0  # rows 0-4: latent rows 0 and 1 touch the hole
    records = []
    out = latent.inpaint(IMAGES[:2], mask, steps=4, jump_length=2, resample=2, callback=records.append,
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert out.shape == (2, 3, SIZE, SIZE)
    final, encoded = records[-1].x_next, latent.encode(IMAGES[:2])
    torch.testing.assert_close(final[:, :, 2:], encoded[:, :, 2:], rtol=0, atol=0)
    assert not torch.allclose(final[:, :, :2], encoded[:, :, :2])


def test_img2img_at_strength_zero_gives_the_reconstruction() -> None:
    latent = tiny_latent_diffusion().eval()
    torch.testing.assert_close(latent.img2img(IMAGES[:2], 0.0, steps=4), latent.decode(latent.encode(IMAGES[:2])))


def test_bad_input_is_a_clear_error() -> None:
    latent = tiny_latent_diffusion()
    with pytest.raises(ValueError, match=r"latents must have shape \(B, 4, 4, 4\)"):
        latent.decode(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, 16, 16\)"):
        latent.encode(torch.rand(1, 3, 12, 12))
    with pytest.raises(ValueError, match="needs its autoencoder"):
        LatentDiffusion(None, latent.diffusion)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latents have 4"):
        LatentDiffusion(tiny_autoencoder(), tiny_latent_diffusion(tiny_autoencoder()).diffusion.with_model(
            latent_unet(3)))  # fmt: skip
    with pytest.raises(ValueError, match="auto_normalize=False, clip_denoised=False"):
        LatentDiffusion(tiny_autoencoder(), GaussianDiffusion(latent_unet(4), image_size=4, timesteps=10))
    unscaled = tiny_latent_diffusion(scale_factor=None)
    with pytest.raises(ValueError, match="scale factor is not known yet"):
        unscaled(IMAGES[:2])
    with pytest.raises(ValueError, match="scale_factor must be a positive number"):
        tiny_latent_diffusion(scale_factor=-1.0)


def latent_unet(channels: int):
    from denoising_diffusion import Unet

    return Unet(8, dim_mults=(1, 2), channels=channels, resnet_block_groups=4, attn_heads=2, attn_dim_head=8)


def test_cached_moments_and_images_give_the_same_loss() -> None:
    """Training on cached moments draws z ~ q(z | x) as training on the images does: the same loss for the same
    RNG state (caching changes the cost, not the objective)."""
    latent = tiny_latent_diffusion()
    torch.manual_seed(3)
    from_images = latent(IMAGES)
    moments = latent.posterior(IMAGES).moments
    torch.manual_seed(3)
    from_cache = latent.use_cached_latents()(moments)
    assert latent.channels == 8 and latent.image_size == (4, 4)
    torch.testing.assert_close(from_cache, from_images)


def test_a_checkpoint_path_is_not_needed_to_decode(tmp_path: Path) -> None:
    """save_pipeline writes one file; the autoencoder's weights travel in it (its decoder gives the same images)."""
    latent = tiny_latent_diffusion().eval()
    save_pipeline(latent, tmp_path / "one.pt")
    rebuilt = load_pipeline(tmp_path / "one.pt")
    z = torch.randn(2, 4, 4, 4)
    torch.testing.assert_close(rebuilt.decode(z), latent.decode(z), rtol=0, atol=0)
