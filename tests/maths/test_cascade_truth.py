"""A super-resolution stage against closed forms (docs/cascade.md).

The linear-Gaussian model: high-resolution images x ~ N(μ, Σ) of 1×4×4 pixels, their low-resolution versions
y = A x (A: the stage's antialiased downsample to 2×2, a linear map read off basis images), and the stage's
conditioning input z_s = α_s U y + σ_s ε (U: its upsample; α_s = cos(π s/2), σ_s = sin(π s/2) written out here). The
ideal conditional denoiser E[x | x_t, z_s] is a Gaussian conditioning in closed form (:class:`IdealStage`); driven
through the stage's own sampling path it must give

* at level 0, the exact conditional p(x | y) (Schur complement): mean μ + ΣAᵀ(AΣAᵀ)⁻¹(y − Aμ), covariance
  Σ − ΣAᵀ(AΣAᵀ)⁻¹AΣ;
* at level s > 0, p(x | z_s) averaged over the augmentation: with K = α_s ΣMᵀ(α_s² MΣMᵀ + σ_s² I)⁻¹, M = UA, mean
  μ + K α_s (U y − Mμ) and covariance Σ − α_s KMΣ + σ_s² KKᵀ;
* with guidance scale 0 (the null image), the unconditional N(μ, Σ).

A wrong level, a swapped α_s/σ_s, a level that never reaches the network or a null that never drops the image moves
these moments by many standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from denoising_diffusion import GaussianDiffusion, SuperResolution, Unet
from denoising_diffusion.cascade import augment, downsample, gaussian_blur, upsample
from denoising_diffusion.conditioning import ConditionSpec

F64 = torch.float64
HIGH, LOW = (4, 4), (2, 2)
D = 16


def linear_map(fn, shape_in: tuple[int, int]) -> Tensor:
    """The matrix (out, in) of a linear image map ``fn`` (1, 1, h, w) -> (1, 1, h', w'), read off basis images."""
    basis = torch.eye(shape_in[0] * shape_in[1], dtype=torch.float32).view(-1, 1, *shape_in)
    return fn(basis).reshape(len(basis), -1).T.to(F64)


A = linear_map(lambda x: downsample(x, LOW), HIGH)  # (4, 16)
U = linear_map(lambda y: upsample(y, HIGH), LOW)  # (16, 4)
M = U @ A
rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
points = torch.stack([rows.flatten(), cols.flatten()], 1).to(F64)
SIGMA = 0.09 * torch.exp(-(torch.cdist(points, points) ** 2) / (2 * 1.5**2)) + 0.01 * torch.eye(D, dtype=F64)
MU = torch.linspace(-0.2, 0.3, D, dtype=F64)


def alpha_sigma_of_level(s: float) -> tuple[float, float]:
    return math.cos(math.pi * s / 2), math.sin(math.pi * s / 2)


def gaussian_mean(h: Tensor, noise_var: Tensor, y: Tensor) -> Tensor:
    """E[x | y] for y = h x + n, x ~ N(μ, Σ), n ~ N(0, diag(noise_var)), rows of y (N, m); pinv for singular parts."""
    gain = SIGMA @ h.T @ torch.linalg.pinv(h @ SIGMA @ h.T + torch.diag(noise_var), hermitian=True)
    return MU + (y - h @ MU) @ gain.T


class IdealStage(nn.Module):
    """The ideal ε-network of the linear-Gaussian stage: (x_t, t, cond_image=z_s, cond_level=s, drop) -> ε̂, with
    x̂_0 = E[x | x_t, z_s] (or E[x | x_t] where ``drop``), on a ddpm schedule given after building."""

    channels, self_condition, learned_variance, cond_drop_prob = 1, False, False, 0.1
    condition_spec = ConditionSpec(cond_image_channels=1, cond_level=True, image_null=True)

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # a parameter for the runner's dtype and device
        self.schedule = None
        self.levels_seen: list[float] = []

    def forward(self, x: Tensor, time: Tensor, *, cond_image: Tensor, cond_level: Tensor, drop=None) -> Tensor:
        alpha, sigma = self.schedule.alpha_sigma(int(time[0]))
        level = float(cond_level[0])
        self.levels_seen.append(level)
        a_s, s_s = alpha_sigma_of_level(level)
        x_t, z = x.reshape(len(x), D).to(F64), cond_image.reshape(len(x), D).to(F64)
        eye = torch.eye(D, dtype=F64)
        unconditional = gaussian_mean(alpha * eye, torch.full((D,), sigma**2, dtype=F64), x_t)
        if s_s == 0.0:  # z = U y exactly: observe y itself
            h, obs, var = A, z @ torch.linalg.pinv(U).T, torch.zeros(4, dtype=F64)
        else:
            h, obs, var = a_s * M, z, torch.full((D,), s_s**2, dtype=F64)
        both = torch.cat([alpha * eye, h]), torch.cat([torch.full((D,), sigma**2, dtype=F64), var])
        conditional = gaussian_mean(*both, torch.cat([x_t, obs], 1))
        x0 = conditional if drop is None else torch.where(drop[:, None], unconditional, conditional)
        return ((x_t - alpha * x0) / sigma).to(x.dtype).view_as(x)


def ideal_stage() -> SuperResolution:
    net = IdealStage()
    diffusion = GaussianDiffusion(net, image_size=4, timesteps=1000, auto_normalize=False, clip_denoised=False)
    net.schedule = diffusion.schedule
    return SuperResolution(diffusion, low_res_size=2, noise_levels=(0.0, 0.5), sample_level=0.0)


def expected_moments(y: Tensor, level: float) -> tuple[Tensor, Tensor]:
    """The closed forms of the module docstring for one low-resolution image y (4,)."""
    if level == 0.0:
        gain = SIGMA @ A.T @ torch.linalg.inv(A @ SIGMA @ A.T)
        return MU + gain @ (y - A @ MU), SIGMA - gain @ A @ SIGMA
    a_s, s_s = alpha_sigma_of_level(level)
    k = a_s * SIGMA @ M.T @ torch.linalg.inv(a_s**2 * M @ SIGMA @ M.T + s_s**2 * torch.eye(D, dtype=F64))
    return MU + k @ (a_s * (U @ y - M @ MU)), SIGMA - a_s * k @ M @ SIGMA + s_s**2 * k @ k.T


def check_moments(x: Tensor, mean: Tensor, cov: Tensor) -> None:
    """Sample mean and covariance of x (N, D) within 5 standard errors of the truth, entry by entry."""
    n, var = len(x), torch.diagonal(cov)
    se_mean = (var / n).sqrt()
    se_cov = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    assert ((x.mean(0) - mean).abs() <= 5 * se_mean).all(), (x.mean(0) - mean) / se_mean
    assert ((torch.cov(x.T) - cov).abs() <= 5 * se_cov + 1e-4).all(), ((torch.cov(x.T) - cov) / se_cov).abs().max()


LOW_RES = torch.tensor([0.35, -0.1, 0.05, 0.4], dtype=F64)


@pytest.mark.parametrize("sampler,steps", [("ddpm", 250), ("ddim", 200)])
@pytest.mark.parametrize("level", [0.0, 0.4])
def test_the_stage_samples_the_conditional_of_a_linear_gaussian_model(sampler: str, steps, level: float) -> None:
    stage, n = ideal_stage(), 3000
    low = LOW_RES.float().view(1, 1, 2, 2).expand(n, 1, 2, 2)
    generator = torch.Generator().manual_seed(0)
    x = stage.sample(low_res=low, level=level, sampler=sampler, steps=steps, generator=generator)
    seen = set(stage.diffusion.model.levels_seen)
    assert seen == {float(torch.tensor(level))}  # the level reaches the network (as float32), at every call
    check_moments(x.reshape(n, D).to(F64), *expected_moments(LOW_RES, level))


def test_guidance_scale_zero_drops_the_low_resolution_image_for_the_null() -> None:
    """Classifier-free guidance's unconditional branch on a stage is the model without its image: N(μ, Σ)."""
    stage, n = ideal_stage(), 3000
    low = LOW_RES.float().view(1, 1, 2, 2).expand(n, 1, 2, 2)
    x = stage.sample(low_res=low, sampler="ddim", steps=200, guidance_scale=0.0,
                     generator=torch.Generator().manual_seed(1))  # fmt: skip
    check_moments(x.reshape(n, D).to(F64), MU, SIGMA)


def test_level_zero_leaves_the_input_unchanged_and_a_level_noises_it_by_the_cosine_path() -> None:
    z_0 = torch.rand(2000, 3, 4, 4) * 2 - 1
    noise = torch.randn_like(z_0)
    assert torch.equal(augment(z_0, torch.zeros(2000), noise), z_0)
    a_s, s_s = alpha_sigma_of_level(0.3)
    z = augment(z_0, torch.full((2000,), 0.3), noise)
    torch.testing.assert_close(z, (a_s * z_0.double() + s_s * noise.double()).float(), rtol=1e-6, atol=1e-6)


def test_training_gives_the_network_the_augmented_input_and_its_level() -> None:
    """The training input of a stage is z_s = α_s normalize(U(D(x))) + σ_s ε with s ~ U[lo, hi] told to the network:
    at (0, 0) exactly the upsampled low-resolution image; at (0.3, 0.3) its residual (z − α z_0)/σ is N(0, 1)."""
    seen: dict[str, Tensor] = {}

    class Spy(Unet):
        def forward(self, x, time, *args, **condition):
            seen.update(condition)
            return super().forward(x, time, *args, **condition)

    torch.manual_seed(0)
    net = Spy(8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8, cond_image_channels=3,
              cond_level=True)  # fmt: skip
    images = torch.rand(64, 3, 16, 16)
    z_0 = upsample(downsample(images, (8, 8)), (16, 16)) * 2 - 1
    for levels in ((0.0, 0.0), (0.3, 0.3), (0.1, 0.4)):
        stage = SuperResolution(GaussianDiffusion(net, image_size=16, timesteps=10), low_res_size=8,
                                noise_levels=levels, sample_level=levels[0])  # fmt: skip
        stage(images)
        level = seen["cond_level"]
        assert level.shape == (64,) and bool(((level >= levels[0]) & (level <= levels[1])).all())
        if levels == (0.0, 0.0):
            assert torch.equal(seen["cond_image"], z_0)
        elif levels == (0.3, 0.3):
            a_s, s_s = alpha_sigma_of_level(0.3)
            residual = (seen["cond_image"] - a_s * z_0) / s_s
            assert abs(float(residual.mean())) < 0.02 and abs(float(residual.std()) - 1) < 0.02
        else:
            assert float(level.std()) > 0.05  # drawn per sample


def test_blur_is_a_normalized_gaussian_and_training_blurs_before_the_noise() -> None:
    delta = torch.zeros(2, 1, 9, 9)
    delta[:, :, 4, 4] = 1.0
    out = gaussian_blur(delta, torch.tensor([0.0, 0.8]))
    assert torch.equal(out[0], delta[0])
    d = torch.arange(-4.0, 5.0)
    profile = torch.exp(-0.5 * (d / 0.8) ** 2)
    expected = torch.outer(profile, profile) / profile.sum() ** 2  # the 3σ kernel holds all 9 taps here
    torch.testing.assert_close(out[1, 0], expected, rtol=1e-5, atol=1e-6)

    seen: dict[str, Tensor] = {}
    net = Unet(8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8, channels=1,
               cond_image_channels=1, cond_level=True)  # fmt: skip
    net.register_forward_pre_hook(lambda m, args, kwargs: seen.update(kwargs), with_kwargs=True)
    stage = SuperResolution(GaussianDiffusion(net, image_size=8, timesteps=10), low_res_size=4,
                            noise_levels=(0.0, 0.0), sample_level=0.0, blur_sigma=(0.6, 0.6))  # fmt: skip
    images = torch.rand(3, 1, 8, 8)
    stage(images)
    z_0 = upsample(downsample(images, (4, 4)), (8, 8)) * 2 - 1
    torch.testing.assert_close(seen["cond_image"], gaussian_blur(z_0, torch.full((3,), 0.6)))


def test_the_downsample_is_antialiased_like_pil_bicubic() -> None:
    """torch's antialiased bicubic resize is PIL's: a 32 px checkerboard of 2 px squares downsampled to 8 px is flat
    grey (an aliased subsample would keep a pattern), and any image matches PIL's BICUBIC resize within 8 bits."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, 32, 32, generator=generator)
    ours = downsample(image, (8, 8))[0, 0]
    pil = Image.fromarray((image[0, 0].numpy() * 255).round().astype("uint8")).resize((8, 8), Image.BICUBIC)
    theirs = torch.tensor(list(pil.tobytes()), dtype=torch.float32).view(8, 8) / 255
    assert (ours - theirs).abs().max() < 2.5 / 255
    board = ((torch.arange(32)[:, None] // 2 + torch.arange(32)[None] // 2) % 2).float().view(1, 1, 32, 32)
    assert float(downsample(board, (8, 8))[0, 0, 2:-2, 2:-2].std()) < 0.02
