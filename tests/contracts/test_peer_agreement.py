"""Cross-implementation oracle: our DDIM sampler and training loss against denoising-diffusion-pytorch 2.3.4's, on the
same network, x_T, timesteps and noise (issue 14).

The peer is an independent implementation of the same equations (Song et al. 2021, eq. 12 with x̂_0 clipped and ε̂
re-derived; Ho et al. 2020's L_simple with its SNR weights), so agreement to float32 round-off checks the
objective conversions, the schedules and the DDIM update at once. Its DDIM visits T−1, T−1−T/S, …, T/S − 1 and then
returns x̂_0: our ``spacing='trailing'``. With the same x_T the two samplers agree; the peer benchmark's scores
differed only because it drew its x_T from a different seed (docs/benchmark-history.md, section 7).
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")  # the peer's sampler draws a progress bar

from denoising_diffusion_pytorch import GaussianDiffusion as PeerDiffusion  # noqa: E402
from denoising_diffusion_pytorch import Unet as PeerUnet  # noqa: E402

from denoising_diffusion import GaussianDiffusion  # noqa: E402

# (objective, schedule, our loss weighting that equals the peer's default): the peer weights the MSE by
# SNR/SNR = 1 for ε, SNR for x_0 and SNR/(SNR + 1) for v, which is min-SNR-γ with γ = ∞ in our terms.
CASES = [
    ("pred_noise", "cosine", {}),
    ("pred_v", "sigmoid", {"min_snr_loss_weight": True, "min_snr_gamma": 1e9}),
    ("pred_x0", "linear", {"min_snr_loss_weight": True, "min_snr_gamma": 1e9}),
]


def _pair(objective: str, schedule: str, weighting: dict) -> tuple[PeerDiffusion, GaussianDiffusion]:
    torch.manual_seed(0)
    unet = PeerUnet(16, dim_mults=(1, 2), channels=1).eval()
    peer = PeerDiffusion(unet, image_size=8, timesteps=1000, sampling_timesteps=20, objective=objective,
                         beta_schedule=schedule).eval()  # fmt: skip
    ours = GaussianDiffusion(unet, image_size=8, timesteps=1000, objective=objective, beta_schedule=schedule,
                             **weighting).eval()  # fmt: skip
    return peer, ours


@pytest.mark.parametrize("objective, schedule, weighting", CASES)
def test_ddim_with_trailing_spacing_equals_the_peer_s_ddim(objective, schedule, weighting):
    peer, ours = _pair(objective, schedule, weighting)
    torch.manual_seed(5)  # the peer draws x_T = randn from the global generator; ours from this same-seeded one
    with torch.inference_mode():
        theirs = peer.sample(batch_size=8)
    mine = ours.sample(8, sampler="ddim", steps=20, spacing="trailing", generator=torch.Generator().manual_seed(5))
    assert (mine - theirs).abs().max().item() < 1e-5
    # the grid matters: our default spacing (linspace, ending on t = 0) is a different, equally valid sampler
    other = ours.sample(8, sampler="ddim", steps=20, spacing="linspace", generator=torch.Generator().manual_seed(5))
    assert (other - theirs).abs().max().item() > 1e-4


@pytest.mark.parametrize("objective, schedule, weighting", CASES)
def test_training_loss_equals_the_peer_s_for_the_same_t_and_noise(objective, schedule, weighting):
    peer, ours = _pair(objective, schedule, weighting)
    gen = torch.Generator().manual_seed(1)
    x_start = torch.rand(16, 1, 8, 8, generator=gen) * 2 - 1
    t = torch.randint(0, 1000, (16,), generator=gen)
    noise = torch.randn(16, 1, 8, 8, generator=gen)
    theirs = peer.p_losses(x_start, t, noise=noise)
    mine = ours.p_losses(x_start, t, noise=noise).mean()  # ours returns the (B,) per-image losses
    assert mine.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_diffusers_network_inside_our_diffusion_gives_diffusers_own_loss():
    """The diagnostic recipe ``peer_unet_diffusers`` (benchmarks/peer_quality.py) trains diffusers' UNet2DModel
    through our GaussianDiffusion; with diffusers' schedule (linear) its loss is diffusers' own training loss (ε-MSE
    of the example) for the same t and noise, so the adapter passes x_t and t through unchanged."""
    from diffusers import DDPMScheduler

    from benchmarks.harness import contenders as libs

    torch.manual_seed(0)
    unet = libs.diffusers_unet(libs.NetworkSize(32, (1, 2), 1, 8)).eval()
    ours = GaussianDiffusion(libs.DiffusersNetwork(unet, 1), image_size=8, timesteps=1000, beta_schedule="linear")
    gen = torch.Generator().manual_seed(1)
    x_start = torch.rand(16, 1, 8, 8, generator=gen) * 2 - 1
    t = torch.randint(0, 1000, (16,), generator=gen)
    noise = torch.randn(16, 1, 8, 8, generator=gen)
    x_t = DDPMScheduler(1000, beta_schedule="linear").add_noise(x_start, noise, t)
    theirs = torch.nn.functional.mse_loss(unet(x_t, t, return_dict=False)[0], noise)
    mine = ours.p_losses(x_start, t, noise=noise).mean()
    assert mine.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_ddim_keeping_the_network_s_eps_equals_diffusers_ddim_scheduler():
    """``rederive_eps=False`` with ``spacing='leading'`` is diffusers' DDIMScheduler as its unconditional example
    builds it (from the DDPM config: clip_sample=True, use_clipped_model_output=False, set_alpha_to_one=True), on
    diffusers' own network and x_T. The default (ε̂ re-derived from the clamped x̂_0) is not: the test can tell.

    Ten steps, because the randomized network is chaotic under DDIM: a 1e-5 change of x_T moves the output by
    0.004 after 10 steps, 0.25 after 20 and 2.0 after 50, so float32 rounding alone would fail a longer chain."""
    steps = 10
    from diffusers import DDIMScheduler, DDPMScheduler

    from benchmarks.harness import contenders as libs

    torch.manual_seed(0)
    unet = libs.diffusers_unet(libs.NetworkSize(32, (1, 2), 1, 8)).eval()
    with torch.no_grad():  # a fresh network predicts ε̂ ≈ 0 and x̂_0 = x_t/α_t: clipping would decide nothing
        for p in unet.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    x_T = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    scheduler = DDIMScheduler.from_config(DDPMScheduler(1000, beta_schedule="linear").config)
    scheduler.set_timesteps(steps)
    x = x_T
    with torch.inference_mode():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t, return_dict=False)[0], t, x, eta=0.0).prev_sample
    theirs = ((x + 1) / 2).clamp(0, 1)

    def ours(rederive_eps: bool) -> torch.Tensor:
        d = GaussianDiffusion(libs.DiffusersNetwork(unet, 1), image_size=8, timesteps=1000, beta_schedule="linear",
                              rederive_eps=rederive_eps).eval()  # fmt: skip
        generator = torch.Generator().manual_seed(2)  # draws the same x_T first
        with torch.inference_mode():
            return d.sample(8, sampler="ddim", steps=steps, spacing="leading", generator=generator)

    # diffusers computes its coefficients in float32; x̂_0 = x_t/√ᾱ_t with √ᾱ_980 ≈ 0.007 amplifies the rounding
    assert ours(False) == pytest.approx(theirs, abs=1e-3)
    assert float((ours(True) - theirs).abs().max()) > 0.1
