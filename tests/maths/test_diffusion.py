"""GaussianDiffusion: the tutorial's code, losses, options and their errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.losses import min_snr_weight
from denoising_diffusion.nn import Unet
from denoising_diffusion.parameterization import Objective


def tiny(**kwargs) -> GaussianDiffusion:
    unet_kwargs = {k: kwargs.pop(k) for k in ("self_condition", "learned_variance", "channels") if k in kwargs}
    model = Unet(dim=8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8, **unet_kwargs)
    return GaussianDiffusion(
        model, image_size=kwargs.pop("image_size", 8), timesteps=kwargs.pop("timesteps", 20), **kwargs
    )


def test_tutorial_snippet_loss_and_backward_at_full_size() -> None:
    """The tutorial's first snippet at its real size (sampling 1000 steps at 128x128 is left to the small test)."""
    # fmt: off
    model = Unet(dim = 64, dim_mults = (1, 2, 4, 8))  # noqa: E251 (exactly as the tutorial writes it)
    diffusion = GaussianDiffusion(model, image_size = 128, timesteps = 1000, loss_type = 'l1')  # noqa: E251
    training_images = torch.rand(8, 3, 128, 128)  # images are normalized from 0 to 1
    loss = diffusion(training_images)
    loss.backward()
    # fmt: on
    assert loss.ndim == 0 and math.isfinite(loss.item())
    assert all(p.grad is not None for p in model.parameters())


def test_tutorial_snippet_small_sizes_samples() -> None:
    # fmt: off
    model = Unet(dim = 8, dim_mults = (1, 2, 4, 8))  # noqa: E251
    diffusion = GaussianDiffusion(model, image_size = 16, timesteps = 10, loss_type = 'l1')  # noqa: E251
    loss = diffusion(torch.rand(8, 3, 16, 16))
    loss.backward()
    sampled_images = diffusion.sample(batch_size = 4)  # noqa: E251
    # fmt: on
    assert sampled_images.shape == (4, 3, 16, 16)
    assert float(sampled_images.min()) >= 0 and float(sampled_images.max()) <= 1


def test_default_sampler_follows_sampling_timesteps() -> None:
    calls = []
    d = tiny(timesteps=20, sampling_timesteps=5)
    d.sample(2, callback=calls.append)
    assert len(calls) == 5 and [c.t for c in calls] == [19, 14, 10, 5, 0]
    calls.clear()
    tiny(timesteps=20).sample(2, callback=calls.append)
    assert [c.t for c in calls] == list(range(19, -1, -1))  # DDPM over the whole chain by default


@pytest.mark.parametrize(  # edm: test_edm.py; pred_velocity (continuous flow paths only): test_flow_process.py
    "objective", [o.value for o in Objective if o not in (Objective.EDM, Objective.PRED_VELOCITY)]
)
@pytest.mark.parametrize("loss_type", ["l1", "l2", "huber"])
@pytest.mark.parametrize("beta_schedule", ["linear", "cosine", "sigmoid", "quadratic"])
def test_every_objective_loss_schedule_trains(objective: str, loss_type: str, beta_schedule: str) -> None:
    """The loss on fixed (t, ε) draws falls by > 25% after 40 Adam steps on one fixed image.

    With a single training image every target (ε, x_0, v) is exactly predictable, so each objective's ideal loss
    is 0 and all fall alike (by 40-50% here); the evaluation draws are fixed, so the fall is not noise.
    """
    torch.manual_seed(0)
    d = tiny(objective=objective, loss_type=loss_type, beta_schedule=beta_schedule, timesteps=50)
    g = torch.Generator().manual_seed(1)
    data = torch.rand(1, 3, 8, 8, generator=g).round().expand(8, -1, -1, -1)  # one fixed binary image
    x0 = d.normalize(data)
    t_eval = torch.randint(0, 50, (64,), generator=g)
    noise_eval = torch.randn(64, 3, 8, 8, generator=g)

    def eval_loss() -> float:
        with torch.no_grad():
            return d.p_losses(x0.repeat(8, 1, 1, 1), t_eval, noise_eval).mean().item()

    before = eval_loss()
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        d(data).backward()
        opt.step()
    after = eval_loss()
    assert after < 0.75 * before, f"{objective}/{loss_type}/{beta_schedule}: {before:.4f} -> {after:.4f}"


def test_min_snr_weights_closed_form() -> None:
    snr = torch.tensor([0.1, 1.0, 5.0, 100.0])
    torch.testing.assert_close(min_snr_weight(snr, Objective.PRED_NOISE, 5.0), torch.tensor([1.0, 1.0, 1.0, 0.05]))
    torch.testing.assert_close(min_snr_weight(snr, Objective.PRED_X0, 5.0), torch.tensor([0.1, 1.0, 5.0, 5.0]))
    expected_v = torch.tensor([0.1 / 1.1, 0.5, 5 / 6, 5 / 101])
    torch.testing.assert_close(min_snr_weight(snr, Objective.PRED_V, 5.0), expected_v)


def test_min_snr_changes_the_loss() -> None:
    torch.manual_seed(0)
    d = tiny(min_snr_loss_weight=True, min_snr_gamma=1.0)
    x0, t, noise = torch.rand(4, 3, 8, 8) * 2 - 1, torch.tensor([0, 5, 10, 19]), torch.randn(4, 3, 8, 8)
    weighted = d.p_losses(x0, t, noise)
    plain = GaussianDiffusion(d.model, **{**d.config, "min_snr_loss_weight": False}).p_losses(x0, t, noise)
    ab = torch.cumprod(1 - d.schedule.betas, 0)[t]
    expected = min_snr_weight(ab / (1 - ab), Objective.PRED_NOISE, 1.0).float()
    torch.testing.assert_close(weighted, plain * expected)


def test_vlb_term_is_zero_when_the_model_matches_the_posterior() -> None:
    """With x̂_0 = x_0 and v = −1 (Σ = β̃) the KL of L_t vanishes for t > 0 (Ho et al. 2020, eq. 5)."""
    d = tiny(learned_variance=True)
    x0 = torch.rand(3, 3, 8, 8) * 2 - 1
    t = torch.tensor([1, 7, 19])
    xt = d.q_sample(x0, t)
    kl = d.vlb_term(x0, xt, t, x0, torch.full_like(x0, -1.0))
    torch.testing.assert_close(kl, torch.zeros(3), atol=1e-5, rtol=0)
    worse = d.vlb_term(x0, xt, t, x0, torch.full_like(x0, 1.0))  # Σ = β > β̃: a positive KL
    assert bool((worse > 0).all())


def test_learned_variance_and_self_condition_train_and_sample() -> None:
    torch.manual_seed(0)
    for kwargs in (
        {"learned_variance": True},
        {"self_condition": True},
        {"learned_variance": True, "self_condition": True},
    ):
        d = tiny(**kwargs)
        loss = d(torch.rand(4, 3, 8, 8))
        loss.backward()
        assert math.isfinite(loss.item())
        for sampler in ("ddpm", "ddim"):
            out = d.sample(2, sampler=sampler, steps=4)
            assert out.shape == (2, 3, 8, 8) and bool(torch.isfinite(out).all())


def test_config_round_trips_through_json() -> None:
    d = tiny(objective="pred_v", beta_schedule=torch.linspace(1e-3, 0.2, 20), sampling_timesteps=7)
    config = json.loads(json.dumps(d.config))
    again = GaussianDiffusion(d.model, **config)
    assert again.config == d.config
    torch.testing.assert_close(again.schedule.betas, d.schedule.betas)
    assert d.with_model(Unet(**d.model.config)).config == d.config


def test_sample_restores_training_mode_and_keeps_dtype() -> None:
    """sample() runs the network in eval mode and gives it back in the mode it found: training, or eval."""
    d = tiny().double()
    d.train()
    out = d.sample(2, steps=3, sampler="ddim")
    assert d.model.training and out.dtype == torch.float64
    d.eval()
    d.sample(2, steps=3, sampler="ddim")
    assert not d.model.training


class Scale(torch.nn.Module):
    """A 'network' out = 3 x_t (any t) that records the self-conditioning input of every call."""

    channels, learned_variance = 2, False

    def __init__(self, self_condition: bool = False) -> None:
        super().__init__()
        self.self_condition = self_condition
        self.weight = torch.nn.Parameter(torch.tensor(3.0))
        self.received: list[torch.Tensor | None] = []

    def forward(self, x, t, x_self_cond=None):
        self.received.append(None if x_self_cond is None else x_self_cond.clone())
        return self.weight * x


def test_self_conditioning_feeds_the_previous_prediction() -> None:
    """Chen et al. 2022 ("Analog Bits", §3): while sampling, a self-conditioned network receives nothing at the first
    step and the previous step's x̂_0 (as the sampler saw it, clamped) at every later one."""
    net = Scale(self_condition=True)
    d = GaussianDiffusion(net, image_size=1, timesteps=20, objective="pred_x0")
    records = []
    d.sample(4, sampler="ddim", steps=5, generator=torch.Generator().manual_seed(0), callback=records.append)
    assert len(net.received) == 5 and net.received[0] is None
    for received, previous in zip(net.received[1:], records):
        torch.testing.assert_close(received, previous.pred_x0, rtol=0, atol=0)


def test_denoiser_clip_override() -> None:
    """denoiser(clip_denoised=...) overrides the model's setting for one denoiser (invert() and the ODE likelihood
    ask for an unclamped one): x̂_0 = 3 x_t comes back clamped to [−1, 1] exactly when clipping is on, and
    ε̂ = (x_t − α_t x̂_0)/σ_t from the x̂_0 returned."""
    x, t = torch.linspace(-1, 1, 8).view(4, 2, 1, 1), torch.full((4,), 10)
    for model_clip in (True, False):
        d = GaussianDiffusion(Scale(), image_size=1, timesteps=20, objective="pred_x0", clip_denoised=model_clip)
        alpha, sigma = (math.sqrt(v) for v in (d.schedule.alphabar(10), 1 - d.schedule.alphabar(10)))
        for override in (None, True, False):
            clip = model_clip if override is None else override
            with torch.no_grad():
                pred = d.denoiser(clip_denoised=override)(x, t)
            want = (3 * x).clamp(-1, 1) if clip else 3 * x
            torch.testing.assert_close(pred.x0, want)
            torch.testing.assert_close(pred.eps, (x - alpha * want) / sigma)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"objective": "pred_eps"}, "unknown objective 'pred_eps'; allowed values: 'pred_noise', 'pred_x0', 'pred_v'"),
        ({"beta_schedule": "cosin"}, "unknown beta_schedule 'cosin'; allowed values: 'linear', 'cosine'"),
        ({"loss_type": "l3"}, "unknown loss_type 'l3'; allowed values: 'l1', 'l2', 'huber'"),
        ({"image_size": 9}, r"image size \(9, 9\) is not divisible by 2"),
        ({"sampling_timesteps": 50}, r"steps must be an integer in \[1, 20\]"),
        ({"timestep_spacing": "even"}, "unknown timestep spacing 'even'"),
        ({"variance_type": "learned"}, "unknown variance type 'learned'; allowed values: 'fixed_small'"),
        ({"variance_type": "learned_range"}, "'learned_range' needs a network built with learned_variance=True"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


def test_bad_call_arguments() -> None:
    d = tiny()
    with pytest.raises(ValueError, match="unknown sampler 'plms'; allowed values: 'ddpm', 'ddim'"):
        d.sample(1, sampler="plms")
    with pytest.raises(ValueError, match=r"sampler 'ddpm' takes no option 'eta' \(its options: variance\)"):
        d.sample(1, sampler="ddpm", eta=0.5)
    with pytest.raises(
        ValueError, match=r"sampler 'heun' takes no option 'etta' \(its options: s_churn, s_tmin, s_tmax, s_noise\)"
    ):
        d.sample(1, sampler="heun", etta=0.5)
    with pytest.raises(ValueError, match="unknown variance type 'large'"):
        d.sample(1, sampler="ddpm", variance="large")
    with pytest.raises(ValueError, match="eta must be >= 0"):
        d.sample(1, sampler="ddim", eta=-1.0)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, 8, 8\).*got \(2, 1, 8, 8\)"):
        d(torch.rand(2, 1, 8, 8))


def test_invert_then_sample_reconstructs() -> None:
    """A network whose ε̂ = 0.3·x_t (any t) defines a smooth ODE: inverting images and integrating back with DDIM
    over the same 200 steps returns them up to the discretization error."""

    class Shrink(torch.nn.Module):
        channels, self_condition, learned_variance = 3, False, False

        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(0.3))

        def forward(self, x, t):
            return self.scale * x

    d = GaussianDiffusion(Shrink(), image_size=4, timesteps=1000, beta_schedule="linear", clip_denoised=False)
    images = torch.rand(2, 3, 4, 4) * 0.6 + 0.2
    latent = d.invert(images, steps=200)
    assert not torch.allclose(latent, d.normalize(images), atol=0.1)
    back = d.sample(2, sampler="ddim", eta=0.0, steps=200, callback=None)  # from fresh noise: only the API runs
    assert back.shape == images.shape
    from denoising_diffusion.processes import spaced_timesteps
    from denoising_diffusion.samplers import sample_ddim

    x0 = sample_ddim(d.denoiser(), latent, d.schedule, spaced_timesteps(d.schedule, 200, "linspace"))
    assert float((d.unnormalize(x0) - images).abs().max()) < 0.02
