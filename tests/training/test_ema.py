"""The power-function EMA (EDM2) against its closed form, and post-hoc reconstruction of an EMA length.

The trick that makes these exact: a "model" whose weight vector has one entry per training step, set to the unit
vector e_k at step k. After n updates the EMA's weight vector *is* the averaging profile (the weight each step's
parameters get), so a profile is read off directly and compared with the closed form of training/ema.py.
"""

from __future__ import annotations

import pytest
import torch
from ema_pytorch import KarrasEMA, PostHocEMA
from torch import Tensor, nn
from trainer_helpers import isolated_accelerate, make_trainer, tiny_diffusion  # noqa: F401

from denoising_diffusion.training.ema import power_ema, power_ema_weights, sigma_rel_to_gamma


def _impulse_profile(n: int, make_ema) -> tuple[Tensor, object]:
    """Feed e_1..e_n through an EMA built by ``make_ema(model)``; return the averaged vector (n,) (None for a
    PostHocEMA, which holds several) and the EMA."""
    model = nn.Linear(n, 1, bias=False)
    ema = make_ema(model)
    for k in range(n):
        model.weight.data.zero_()
        model.weight.data[0, k] = 1.0
        ema.update()
    averaged = getattr(ema, "ema_model", None)
    return (averaged.weight.data[0].double() if averaged is not None else None), ema


def _relative_moments(profile: Tensor) -> tuple[float, float]:
    """(mean, sd) of the profile's step index, both relative to the number of steps (EDM2's σ_rel is the sd)."""
    n = len(profile)
    p = profile / profile.sum()
    k = torch.arange(1, n + 1, dtype=torch.float64)
    mean = (p * k).sum()
    return float(mean / n), float(((p * (k - mean) ** 2).sum()).sqrt() / n)


def test_power_ema_matches_closed_form_on_a_scalar_sequence():
    torch.manual_seed(0)
    values = torch.randn(60, dtype=torch.float64)
    model = nn.Linear(1, 1, bias=False)
    ema = power_ema(model, sigma_rel=0.1)
    for v in values:
        model.weight.data.fill_(float(v))
        ema.update()
    weights = power_ema_weights(len(values), ema.gamma)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert float(ema.ema_model.weight) == pytest.approx(float((weights * values).sum()), abs=1e-6)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.10, 0.20])
def test_power_ema_profile_has_the_requested_relative_length(sigma_rel):
    profile, ema = _impulse_profile(1000, lambda m: power_ema(m, sigma_rel=sigma_rel))
    assert torch.allclose(profile, power_ema_weights(1000, ema.gamma), atol=1e-7)
    assert _relative_moments(profile)[1] == pytest.approx(sigma_rel, rel=0.02)
    assert ema.gamma == pytest.approx(sigma_rel_to_gamma(sigma_rel))


def test_ema_pytorch_update_every_distorts_the_profile():
    """Why power_ema fixes update_every=1: ema-pytorch's default (100) and 10 average only every k-th step with
    the per-step β, so the profile of σ_rel 0.05 is centred far from the end of training and ~5x wider."""
    for every in (10, 100):
        profile, _ = _impulse_profile(2000, lambda m, e=every: KarrasEMA(m, sigma_rel=0.05, update_every=e))
        mean, sd = _relative_moments(profile)
        assert mean < 0.8 and sd > 0.15
    mean, sd = _relative_moments(_impulse_profile(2000, lambda m: power_ema(m, sigma_rel=0.05))[0])
    assert mean > 0.9 and sd == pytest.approx(0.05, rel=0.02)


def test_post_hoc_reconstruction_recovers_a_tracked_ema_length(tmp_path):
    """EDM2 Sec. 3.2: snapshots of two EMAs (σ_rel 0.05 and 0.15, every 10 of 200 steps) combined by least squares
    into σ_rel 0.10; compared with an EMA of σ_rel 0.10 tracked directly. Tolerance: total absolute difference of
    the two profiles < 0.01 (measured 0.004; the profiles each sum to 1), σ_rel within 2%."""
    direct, _ = _impulse_profile(200, lambda m: power_ema(m, sigma_rel=0.10))
    _, post_hoc = _impulse_profile(
        200,
        lambda m: PostHocEMA(
            m, sigma_rels=(0.05, 0.15), checkpoint_every_num_steps=10, checkpoint_folder=str(tmp_path),
            checkpoint_dtype=torch.float32, update_every=1,
        ),
    )  # fmt: skip
    synthesized = post_hoc.synthesize_ema_model(sigma_rel=0.10).ema_model.weight.data[0].double()
    assert (synthesized - direct).abs().sum() < 0.01
    assert _relative_moments(synthesized)[1] == pytest.approx(0.10, rel=0.02)
    # A length outside the tracked pair is reconstructed less well, but not absurdly: the check has teeth.
    far = post_hoc.synthesize_ema_model(sigma_rel=0.25).ema_model.weight.data[0].double()
    assert (far - _impulse_profile(200, lambda m: power_ema(m, sigma_rel=0.25))[0]).abs().sum() > 0.01


@pytest.mark.parametrize("sigma_rel", [0.0, -0.1, 0.3, 1.0])
def test_power_ema_rejects_lengths_without_a_power_function(sigma_rel):
    with pytest.raises(ValueError, match="sigma_rel"):
        power_ema(nn.Linear(1, 1), sigma_rel=sigma_rel)


def test_trainer_with_ema_sigma_rel_averages_its_steps_by_the_power_profile_and_resumes(tmp_path):
    """Trainer(ema_sigma_rel=...) keeps a power EMA updated every step: after 6 steps the EMA network equals
    Σ w_k θ_k over the network after each step (closed-form weights); a run stopped at step 4 and resumed to 6
    ends with the same EMA bit for bit."""
    data = torch.rand(16, 3, 8, 8)
    snapshots: list[Tensor] = []
    holder: dict[str, object] = {}

    def log_fn(row):
        net = holder["trainer"].trainable.model  # type: ignore[attr-defined]
        snapshots.append(nn.utils.parameters_to_vector(net.parameters()).detach().double().clone())

    torch.manual_seed(0)
    trainer = make_trainer(tiny_diffusion(), data, tmp_path / "a", train_num_steps=6, ema_sigma_rel=0.1,
                           log_fn=log_fn, save_and_sample_every=2, num_samples=0)  # fmt: skip
    holder["trainer"] = trainer
    trainer.train()
    assert isinstance(trainer.ema, KarrasEMA) and trainer.ema.update_every == 1
    weights = power_ema_weights(len(snapshots), trainer.ema.gamma)
    expected = sum(w * s for w, s in zip(weights, snapshots))
    averaged = nn.utils.parameters_to_vector(trainer.ema.ema_model.parameters()).double()
    assert torch.allclose(averaged, expected, atol=1e-6)

    torch.manual_seed(0)
    first = make_trainer(tiny_diffusion(), data, tmp_path / "b", train_num_steps=4, ema_sigma_rel=0.1,
                         save_and_sample_every=2, num_samples=0)  # fmt: skip
    first.train()
    resumed = make_trainer(tiny_diffusion(), data, tmp_path / "b", train_num_steps=6, ema_sigma_rel=0.1,
                           save_and_sample_every=2, num_samples=0, resume="auto")  # fmt: skip
    resumed.train()
    for a, b in zip(resumed.ema.ema_model.parameters(), trainer.ema.ema_model.parameters()):
        assert torch.equal(a, b)
