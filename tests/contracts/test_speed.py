"""The speed options change how training runs, never what it computes: fused Adam, its checkpoints, torch.compile."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from denoising_diffusion.checkpoint import load_checkpoint
from denoising_diffusion.training.optimizer import load_optimizer_state, make_adam
from tests.trainer_helpers import isolated_accelerate, make_trainer, reset_accelerate, tiny_diffusion  # noqa: F401 (fixture)


def _train_steps(optimizer: torch.optim.Optimizer, model: torch.nn.Module, steps: int = 3) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        model(torch.randn(5, 4, generator=generator)).square().sum().backward()
        optimizer.step()


def test_make_adam_is_fused_on_the_cpu_and_equals_the_default_adam() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    reference = copy.deepcopy(model)
    fused = make_adam(model.parameters(), lr=1e-2, betas=(0.9, 0.99))
    plain = torch.optim.Adam(reference.parameters(), lr=1e-2, betas=(0.9, 0.99))
    assert fused.param_groups[0]["fused"] is True
    _train_steps(fused, model)
    _train_steps(plain, reference)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        assert not torch.equal(p, p.detach() * 0)  # sanity: the weights are not trivially zero


def test_loading_a_plain_adam_state_keeps_the_fused_kernel_and_the_moments() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    plain = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train_steps(plain, model, steps=2)
    fused = make_adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
    load_optimizer_state(fused, plain.state_dict())
    assert fused.param_groups[0]["fused"] is True  # a plain state dict says fused=None
    assert fused.param_groups[0]["lr"] == 1e-2  # everything else comes from the checkpoint
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(fused.state[model.weight][key], plain.state[model.weight][key])
    _train_steps(fused, model, steps=1)  # and it still steps


def test_compiled_training_keeps_plain_checkpoints(tmp_path: Path) -> None:
    """Trainer(compile=True) trains through the compiled network; the checkpoint has the plain network's keys,
    loads into an uncompiled model, and the first loss equals the eager run's (same seed, same batch)."""
    data = [torch.rand(3, 8, 8) for _ in range(8)]
    diffusion = tiny_diffusion()
    twin = copy.deepcopy(diffusion)
    eager_losses: list[float] = []
    compiled_losses: list[float] = []
    eager = make_trainer(
        diffusion,
        data,
        tmp_path / "eager",
        train_num_steps=2,
        num_samples=0,
        log_fn=lambda row: eager_losses.append(row["loss"]),
    )
    eager.train()
    reset_accelerate()
    # aot_eager traces forward and backward like the default inductor backend, but skips code generation
    # (inductor itself takes ~75 s to compile even this tiny network on 2 cores; benchmarks/ run it).
    compiled = make_trainer(
        twin,
        data,
        tmp_path / "compiled",
        train_num_steps=2,
        num_samples=0,
        compile={"backend": "aot_eager"},
        log_fn=lambda row: compiled_losses.append(row["loss"]),
    )
    assert compiled.ema is not None
    assert getattr(compiled.ema.ema_model, "_compiled_call_impl", None) is None  # the EMA copy stays eager
    compiled.train()
    assert compiled.diffusion.model._compiled_call_impl is not None
    assert len(compiled_losses) == 2
    for compiled_loss, eager_loss in zip(compiled_losses, eager_losses):
        assert abs(compiled_loss - eager_loss) < 1e-5 * max(1.0, abs(eager_loss))
    checkpoint = load_checkpoint(tmp_path / "compiled" / "model-1.pt")
    plain = load_checkpoint(tmp_path / "eager" / "model-1.pt")
    assert set(checkpoint["model"]) == set(plain["model"])
    assert not any("_orig_mod" in key for key in checkpoint["model"])
    tiny_diffusion().model.load_state_dict(checkpoint["model"])


def test_compile_network_keeps_the_layout_on_the_cpu_unless_told(monkeypatch) -> None:
    from denoising_diffusion.training import compilation as speed

    seen: list[dict] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: seen.append(kwargs))
    net = torch.nn.Linear(2, 2)
    assert speed.compile_network(net) is net
    speed.compile_network(net, {"mode": "max-autotune"})
    assert seen == [speed.CPU_COMPILE_ARGUMENTS, {"mode": "max-autotune"}]
