"""Numerical guards: non-finite steps are skipped, counted, logged, never saved, and stop training in the end."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor
from trainer_helpers import isolated_accelerate, make_trainer, read_loss_log  # noqa: F401

from denoising_diffusion.checkpoint import load_checkpoint
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.nn.unet import Unet
from denoising_diffusion.training.guards import NonFiniteGuard, TrainingDivergedError


class PoisonedDiffusion(GaussianDiffusion):
    """Returns a NaN loss (still attached to the graph, so the gradients are NaN too) at the chosen forward calls."""

    poisoned_calls: set[int]
    calls: int

    def forward(self, img: Tensor) -> Tensor:
        self.calls += 1
        loss = super().forward(img)
        return loss * math.nan if self.calls in self.poisoned_calls else loss


def poisoned_diffusion(poisoned_calls: set[int]) -> PoisonedDiffusion:
    unet = Unet(8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    diffusion = PoisonedDiffusion(unet, image_size=8, timesteps=10)
    diffusion.poisoned_calls, diffusion.calls = set(poisoned_calls), 0
    return diffusion


@pytest.fixture
def images() -> list[Tensor]:
    return list(torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(2)).unbind(0))


def snapshot(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_a_nan_step_is_skipped_counted_and_leaves_weights_and_ema_alone(images, tmp_path: Path, caplog) -> None:
    states: dict[int, tuple[dict, dict]] = {}
    trainer = None

    def record(row: dict) -> None:  # runs after each step's EMA update
        states[row["step"]] = (snapshot(trainer.diffusion.model), snapshot(trainer.ema))

    trainer = make_trainer(
        poisoned_diffusion({3}), images, tmp_path / "r", train_num_steps=5, num_samples=0, log_fn=record
    )
    with caplog.at_level(logging.WARNING):
        trainer.train()
    rows = read_loss_log(tmp_path / "r" / "loss.csv")
    assert [r["skipped"] for r in rows] == ["0", "0", "1", "0", "0"]
    assert rows[2]["loss"] == "nan" and math.isfinite(float(rows[3]["loss"]))
    assert same(states[3][0], states[2][0]) and same(states[3][1], states[2][1])  # no update, no EMA update
    assert not same(states[4][0], states[3][0]) and not same(states[4][1], states[3][1])  # training went on
    assert trainer.guard.total_skipped == 1 and trainer.guard.consecutive_bad == 0
    assert any("step 3: non-finite loss" in r.getMessage() for r in caplog.records)
    assert load_checkpoint(tmp_path / "r" / "model-3.pt")["step"] == 5


def test_consecutive_bad_steps_stop_training_with_the_last_good_checkpoint_intact(images, tmp_path: Path) -> None:
    results = tmp_path / "r"
    trainer = make_trainer(
        poisoned_diffusion(set(range(5, 100))), images, results, train_num_steps=20, num_samples=0, max_bad_steps=3
    )
    with pytest.raises(TrainingDivergedError, match=r"stopped at step 7: 3 optimizer steps in a row .*non-finite"):
        trainer.train()
    # checkpoints at steps 2 and 4; step 6 was bad, so model-3.pt was not written from it
    assert sorted(p.name for p in results.glob("model-*.pt")) == ["model-1.pt", "model-2.pt"]
    good = load_checkpoint(results / "model-2.pt")
    assert good["step"] == 4 and all(torch.isfinite(t).all() for t in good["model"].values())
    assert same(snapshot(trainer.diffusion.model), good["model"])  # steps 5..7 never touched the weights
    rows = read_loss_log(results / "loss.csv")
    assert [(r["step"], r["skipped"]) for r in rows[4:]] == [("5", "1"), ("6", "1"), ("7", "1")]


def test_a_non_finite_gradient_with_a_finite_loss_is_a_bad_step(images, tmp_path: Path) -> None:
    unet = Unet(8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    diffusion = GaussianDiffusion(unet, image_size=8, timesteps=10)
    trainer = make_trainer(diffusion, images, tmp_path / "r", train_num_steps=3, num_samples=0, max_bad_steps=2)
    poison = {"on": False}
    next(diffusion.model.parameters()).register_hook(lambda g: g * math.inf if poison["on"] else g)
    trainer.train_num_steps = 1
    trainer.train()
    poison["on"] = True
    before = snapshot(diffusion.model)
    trainer.train_num_steps = 2
    trainer.train()
    rows = read_loss_log(tmp_path / "r" / "loss.csv")
    assert (
        rows[-1]["skipped"] == "1"
        and math.isfinite(float(rows[-1]["loss"]))
        and rows[-1]["grad_norm"] in ("inf", "nan")
    )
    assert same(snapshot(diffusion.model), before) and trainer.guard.consecutive_bad == 1


def with_cpu_grad_scaler(trainer) -> torch.amp.GradScaler:
    """Give the trainer a GradScaler, as accelerate does for fp16 on a GPU (there is none here). init_scale=1 keeps
    the arithmetic of fp32; the scaler still inspects the gradients and skips steps with inf/NaN."""
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=1000)
    trainer.accelerator.scaler = scaler
    # accelerate's AcceleratedOptimizer sets up stepping through a scaler in __init__: redo it in place, so that the
    # accelerator's own list of optimizers (optimizer_step_was_skipped) sees the same object
    trainer.opt.__init__(trainer.opt.optimizer, device_placement=False, scaler=scaler)
    return scaler


def test_under_a_grad_scaler_an_overflow_is_skipped_once_and_not_counted_as_bad(images, tmp_path: Path) -> None:
    unet = Unet(8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    diffusion = GaussianDiffusion(unet, image_size=8, timesteps=10)
    trainer = make_trainer(diffusion, images, tmp_path / "r", train_num_steps=3, num_samples=0, max_bad_steps=1)
    scaler = with_cpu_grad_scaler(trainer)
    overflow = {2}
    step = {"n": 0}

    def hook(grad: Tensor) -> Tensor:
        step["n"] += 1
        return grad * math.inf if step["n"] in overflow else grad

    next(diffusion.model.parameters()).register_hook(hook)
    trainer.train()  # max_bad_steps=1 would stop at the first bad step: an overflow is not one
    rows = read_loss_log(tmp_path / "r" / "loss.csv")
    assert [r["skipped"] for r in rows] == ["0", "1", "0"]
    assert scaler.get_scale() == 0.5  # the scaler saw the overflow and backed off
    assert trainer.guard.total_bad == 0 and trainer.guard.total_skipped == 1
    # The fused Adam is called through the overflow with found_inf and must leave it out: 2 updates in 3 steps
    assert trainer.opt.param_groups[0]["fused"] is True
    assert float(trainer.opt.state[next(diffusion.model.parameters())]["step"]) == 2


def test_under_a_grad_scaler_a_nan_loss_is_still_a_bad_step(images, tmp_path: Path) -> None:
    trainer = make_trainer(
        poisoned_diffusion({2}), images, tmp_path / "r", train_num_steps=3, num_samples=0, max_bad_steps=1
    )
    with_cpu_grad_scaler(trainer)
    with pytest.raises(TrainingDivergedError, match="stopped at step 2"):
        trainer.train()


def test_no_checkpoint_is_written_from_non_finite_weights(images, tmp_path: Path) -> None:
    trainer = make_trainer(poisoned_diffusion(set()), images, tmp_path / "r", num_samples=0)
    with torch.no_grad():
        next(trainer.diffusion.model.parameters()).fill_(math.nan)
    with pytest.raises(TrainingDivergedError, match=r"refusing to write .*model-7.pt.*NaN or inf"):
        trainer.save(7)
    assert not (tmp_path / "r" / "model-7.pt").exists()


def test_the_ema_and_the_checkpoint_hold_no_schedule_tables(images, tmp_path: Path) -> None:
    trainer = make_trainer(poisoned_diffusion(set()), images, tmp_path / "r", train_num_steps=2, num_samples=0)
    trainer.train()
    assert not dict(trainer.diffusion.named_buffers())  # the process's tables live on the process, not as buffers
    schedule_names = {"betas", "alphas_cumprod", "sqrt_alphas_cumprod", "posterior_variance", "snr"}
    checkpoint = load_checkpoint(tmp_path / "r" / "model-1.pt")
    for where, state in (
        ("ema", trainer.ema.state_dict()),
        ("saved ema", checkpoint["ema"]),
        ("saved model", checkpoint["model"]),
    ):
        leaked = [k for k in state if k.rsplit(".", 1)[-1] in schedule_names]
        assert not leaked, f"{where} holds schedule tables {leaked}"


def test_guard_options_and_bookkeeping() -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_bad_steps must be an int >= 1 or None"):
            NonFiniteGuard(bad)
    guard = NonFiniteGuard(None)
    for step in range(1, 50):
        assert guard.record(step, loss=math.nan, grad_norm=1.0, has_scaler=False, scaler_skipped=False).bad
        guard.raise_if_diverged(step, loss=math.nan, grad_norm=1.0)  # None: never stops
    assert guard.consecutive_bad == 49
    report = guard.record(50, loss=1.0, grad_norm=1.0, has_scaler=False, scaler_skipped=False)
    assert not report.skipped and guard.consecutive_bad == 0 and guard.total_bad == 49
    assert NonFiniteGuard.should_step(True, False, has_scaler=True)  # the scaler decides
    assert not NonFiniteGuard.should_step(True, False, has_scaler=False)
    assert not NonFiniteGuard.should_step(False, True, has_scaler=True)
