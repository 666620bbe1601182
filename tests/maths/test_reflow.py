"""Reflow (Liu et al. 2023, Alg. 1) against closed forms, then end to end on a tiny model and the command line.

Gaussian data x_0 ~ N(m, s² I) on the straight path, per dimension:

* The 1-rectified flow (flow matching with independent noise) has the ideal velocity of oracle.GaussianMixture. Its
  ODE maps x_1 to x_0 = m + s x_1 (the monotone map between the Gaussians), along the curved trajectories
  x_t = (1 − t) m + sd_t c with sd_t = √((1 − t)² s² + t²).
* Reflowed, the coupling (x_0, x_1) = (m + s z, z) is jointly Gaussian, so E[x_1 − x_0 | x_t] at
  x_t = (1 − t) x_0 + t x_1 is linear in x_t (:func:`reflowed_velocity`: μ_v + Σ_vx Σ_xx⁻¹ (x_t − μ_x), from the
  coupling's moments). Its trajectories x_t = (1 − t) m + ((1 − t) s + t) c are straight, so one Euler step lands
  where the ODE does, and its straightness S is 0; the 1-rectified flow's is the closed form of
  :func:`curved_straightness`.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from oracle import GaussianMixture
from test_flow_oracle import flow_model
from test_flow_process import FixedOutput
from torch import Tensor
from trainer_helpers import isolated_accelerate, make_trainer  # noqa: F401 (autouse fixture)

from denoising_diffusion import GaussianDiffusion, Unet, load_pipeline, save_pipeline
from denoising_diffusion.checkpoint import make_checkpoint, save_checkpoint
from denoising_diffusion.cli import main
from denoising_diffusion.data.batch import collate_batch
from denoising_diffusion.pipeline import spec_of
from denoising_diffusion.processes import FlowSchedule
from denoising_diffusion.reflow import (
    CouplingDataset,
    CouplingSet,
    RectifiedFlow,
    euler_trajectory,
    flow_grid,
    generate_couplings,
    load_couplings,
    model_straightness,
    save_couplings,
    student_of,
)

F64 = torch.float64
MEAN, STD = [0.5, -0.25], 0.4
DATA = GaussianMixture([1.0], [MEAN], [STD])
T_MAX = FlowSchedule().t_max


def exact_coupling(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(x_0, x_1) = (m + s z, z), z ~ N(0, I): the 1-rectified flow's map, (n, 2, 1, 1) each."""
    z = torch.randn(n, 2, 1, 1, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return torch.tensor(MEAN, dtype=F64).view(1, 2, 1, 1) + STD * z, z


def reflowed_velocity(x0: Tensor, x1: Tensor):
    """E[x_1 − x_0 | x_t] of a jointly Gaussian coupling, per dimension, from its moments: with v = x_1 − x_0 and
    x_t = (1 − t) x_0 + t x_1, E[v | x_t] = E v + Cov(v, x_t)/Var(x_t) (x_t − E x_t) (exact moments of the pair
    (m + s z, z): E x_0 = m, Var x_0 = s², Cov(x_0, x_1) = s, Var x_1 = 1)."""
    m = torch.tensor(MEAN, dtype=F64).view(1, 2, 1, 1)
    var0, cov01, var1 = STD**2, STD, 1.0

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        s = float(t[0])
        mean_x, mean_v = (1 - s) * m, -m
        var_x = (1 - s) ** 2 * var0 + 2 * s * (1 - s) * cov01 + s**2 * var1
        cov_vx = (1 - s) * cov01 + s * var1 - (1 - s) * var0 - s * cov01  # Cov(x_1 − x_0, (1 − s) x_0 + s x_1)
        return mean_v + cov_vx / var_x * (x - mean_x)

    return velocity


def straight_model() -> GaussianDiffusion:
    """A flow model whose network is the reflowed velocity (the model the test samplers run)."""
    d = flow_model(DATA, "flow")
    d.model.velocity = reflowed_velocity(*exact_coupling(1))
    return d


def test_the_teachers_ode_coupling_is_the_exact_map() -> None:
    """generate_couplings with the ideal 1-rectified flow: x_0 = m + s x_1 up to the start at t_max = 0.999 (the
    true point there is 0.001 x_0 + 0.999 x_1: an error of about 0.001·|x|) and Heun's at 50 steps uniform in t
    (about 0.002 on average; 0.014 at its default 25 Karras steps, which start at σ̃ = 80, t = 0.988)."""
    teacher = flow_model(DATA, "flow")
    couplings = generate_couplings(
        teacher, 500, steps=50, spacing="linspace", generator=torch.Generator().manual_seed(0)
    )
    assert couplings.x0.shape == couplings.x1.shape == (500, 2, 1, 1) and couplings.config["nfe"] == 99
    expected = torch.tensor(MEAN).view(1, 2, 1, 1) + STD * couplings.x1
    assert float((couplings.x0 - expected).abs().mean()) < 0.003
    torch.testing.assert_close(couplings.x0, expected, atol=0.01, rtol=0)


def test_the_reflowed_flow_is_straight_one_euler_step_lands_on_the_odes_endpoint() -> None:
    """Euler at one step = Heun at 50 steps = m + s·c with c the straight line through (t_max, x_1) (to 1e-6: the
    network is told 999·t in float32); the curved 1-rectified flow's single step misses its own ODE endpoint by
    more than 0.05 on average (what makes the check bite). Both grids start at t_max (linspace)."""
    x1 = torch.randn(400, 2, 1, 1, generator=torch.Generator().manual_seed(1), dtype=F64)

    def run(model: GaussianDiffusion, sampler: str, steps: int) -> Tensor:
        info = model.sampler_info(sampler)
        return info.fn(model.denoiser(), x1, model.schedule, model.runner.times(steps, "linspace", info))

    straight, curved = straight_model(), flow_model(DATA, "flow")
    one = run(straight, "euler", 1)
    m = torch.tensor(MEAN, dtype=F64).view(1, 2, 1, 1)
    c = (x1 - (1 - T_MAX) * m) / ((1 - T_MAX) * STD + T_MAX)
    torch.testing.assert_close(one, m + STD * c, atol=1e-6, rtol=0)
    torch.testing.assert_close(run(straight, "heun", 50), one, atol=1e-6, rtol=0)
    assert float((run(curved, "euler", 1) - run(curved, "heun", 50)).abs().mean()) > 0.05


def curved_straightness() -> float:
    """S per unit c² of the 1-rectified flow's trajectory x_t = (1 − t) m + sd_t c over [0, T]: (1/T) ∫_0^T
    (sd'_t − (sd_T − s)/T)² dt (the chord velocity is −m + (sd_T − s) c/T, the velocity −m + sd'_t c), by the
    trapezoidal rule on 20001 points."""
    t = torch.linspace(0, T_MAX, 20001, dtype=F64)
    sd = ((1 - t) ** 2 * STD**2 + t**2).sqrt()
    d_sd = (t - (1 - t) * STD**2) / sd
    chord = (sd[-1] - STD) / T_MAX
    return float(torch.trapezoid((d_sd - chord) ** 2, t)) / T_MAX


def test_straightness_is_zero_for_the_reflowed_field_and_the_closed_form_for_the_curved_one() -> None:
    """S of each sample along Euler's path (400 steps): the reflowed field's is 0 (to rounding); the 1-rectified
    flow's is c²·K with K = :func:`curved_straightness` (per element, c² averaged over the 2 dims), within 3%
    (Euler's O(1/steps) error)."""
    x1 = torch.randn(64, 2, 1, 1, generator=torch.Generator().manual_seed(2), dtype=F64)
    grid = flow_grid(FlowSchedule(), 400)
    straight = euler_trajectory(reflowed_velocity(*exact_coupling(1)), x1, grid).straightness()
    curved = euler_trajectory(DATA.velocity(FlowSchedule()), x1, grid).straightness()
    m = torch.tensor(MEAN, dtype=F64).view(1, 2, 1, 1)
    sd_top = math.sqrt((1 - T_MAX) ** 2 * STD**2 + T_MAX**2)
    c2 = ((x1 - (1 - T_MAX) * m) / sd_top).pow(2).flatten(1).mean(1)
    assert float(straight.abs().max()) < 1e-12
    torch.testing.assert_close(curved / c2, torch.full_like(c2, curved_straightness()), rtol=0.03, atol=0)
    assert bool((curved > 100 * straight.abs().max()).all())


# ----- the student ----------------------------------------------------------------------------------------------


def test_a_coupled_batch_trains_on_its_own_noise_with_target_x1_minus_x0() -> None:
    """A network that outputs x_1 − x_0 of each pair has zero loss at every t (the straight path's target does not
    depend on t), and a positive one when the batch's noise is dropped (fresh noise)."""
    g = torch.Generator().manual_seed(3)
    x0, x1 = torch.rand(6, 1, 8, 8, generator=g), torch.randn(6, 1, 8, 8, generator=g)
    model = RectifiedFlow(FixedOutput(x1 - (x0 * 2 - 1)), image_size=8, process="flow")
    with torch.no_grad():
        assert float(model({"image": x0, "noise": x1})) < 1e-12
        assert float(model({"image": x0})) > 0.1 and float(model(x0)) > 0.1


def test_rectified_flow_refuses_other_paths_and_bad_batches() -> None:
    with pytest.raises(ValueError, match="needs process='flow', got 'flow_cosine'"):
        RectifiedFlow(FixedOutput(torch.zeros(1)), image_size=8, process="flow_cosine")
    model = RectifiedFlow(FixedOutput(torch.zeros(1)), image_size=8, process="flow")
    with pytest.raises(ValueError, match="noise must have its images' shape"):
        model({"image": torch.rand(2, 1, 8, 8), "noise": torch.randn(2, 1, 4, 4)})
    with pytest.raises(ValueError, match="entry 'depth'"):
        model({"image": torch.rand(2, 1, 8, 8), "noise": torch.randn(2, 1, 8, 8), "depth": torch.zeros(2)})


def tiny_flow(**kwargs) -> GaussianDiffusion:
    unet = Unet(8, dim_mults=(1, 2), channels=1, resnet_block_groups=4, attn_heads=2, attn_dim_head=8, **kwargs)
    return GaussianDiffusion(unet, image_size=8, process="flow", sampling_timesteps=3)


def test_couplings_round_trip_and_carry_a_conditional_teachers_classes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = tiny_flow(num_classes=3)
    couplings = generate_couplings(teacher, 6, steps=2, batch_size=4, generator=torch.Generator().manual_seed(0),
                                   classes=[0, 1, 2, 2, 1, 0])  # fmt: skip
    assert couplings.condition["classes"].tolist() == [0, 1, 2, 2, 1, 0] and couplings.config["teacher"]["process"]
    loaded = load_couplings(save_couplings(couplings, tmp_path / "c.pt"))
    assert torch.equal(loaded.x0, couplings.x0) and torch.equal(loaded.x1, couplings.x1)
    assert loaded.config == couplings.config and torch.equal(
        loaded.condition["classes"], couplings.condition["classes"]
    )
    batch = collate_batch([CouplingDataset(loaded)[i] for i in range(4)])
    assert batch["label"].tolist() == [0, 1, 2, 2]
    student = student_of(teacher, sampling_timesteps=1)
    assert isinstance(student, RectifiedFlow) and student.sampling_timesteps == 1
    assert torch.isfinite(student(batch))
    s = model_straightness(student, 5, steps=2, batch_size=2, classes=torch.tensor([0, 1, 2, 0, 1]))
    assert s.shape == (5,)  # per-draw classes sliced with the batches
    drawn = generate_couplings(teacher, 5, steps=1, generator=torch.Generator().manual_seed(1))  # classes drawn
    assert drawn.condition["classes"].shape == (5,)
    save_pipeline(teacher, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="is not a coupling set"):
        load_couplings(tmp_path / "model.pt")
    with pytest.raises(ValueError, match="deterministic ODE sampler .* 'ddpm' draws fresh noise"):
        generate_couplings(teacher, 2, sampler="ddpm")


def test_couplings_of_another_process_hold_unit_noise_and_unclamped_samples() -> None:
    """An EDM teacher's noise x_T ~ N(0, 80² I) is stored as x_1 = x_T/80 ~ N(0, I); x_0 is its sample before the
    clamp to [0, 1] that sample() applies (an untrained network without x̂_0 clipping leaves that range)."""
    torch.manual_seed(0)
    unet = Unet(8, dim_mults=(1, 2), channels=1, resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    teacher = GaussianDiffusion(unet, image_size=8, process="edm", clip_denoised=False)
    couplings = generate_couplings(teacher, 64, steps=2, generator=torch.Generator().manual_seed(0))
    assert abs(float(couplings.x1.std()) - 1.0) < 0.05 and abs(float(couplings.x1.mean())) < 0.05
    sample = teacher.sample(64, sampler="heun", steps=2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(couplings.x0.clamp(0, 1), sample)
    assert bool(((couplings.x0 < 0) | (couplings.x0 > 1)).any())


def test_reflow_end_to_end_student_trains_reloads_and_is_measured(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = tiny_flow()
    couplings = generate_couplings(teacher, 8, steps=2, generator=torch.Generator().manual_seed(0))
    student = student_of(teacher, sampling_timesteps=1)
    make_trainer(student, CouplingDataset(couplings), tmp_path / "r", train_num_steps=2,
                 augment_horizontal_flip=False).train()  # fmt: skip
    loaded = load_pipeline(tmp_path / "r" / "model-1.pt")
    assert type(loaded) is RectifiedFlow and loaded.config == student.config
    assert loaded.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 8, 8)
    s = model_straightness(loaded, 4, steps=3, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4,) and bool((s >= 0).all() and torch.isfinite(s).all())


# ----- the command line ---------------------------------------------------------------------------------------


def test_reflow_command_writes_couplings_and_a_student(tmp_path: Path, capsys) -> None:
    teacher = tiny_flow()
    make_trainer(teacher, [torch.rand(1, 8, 8) for _ in range(8)], tmp_path / "t", train_num_steps=2,
                 num_samples=0).train()  # fmt: skip
    args = ["reflow", str(tmp_path / "t" / "model-1.pt"), "--pairs", "8", "--steps", "2", "--results",
            str(tmp_path / "r"), "--train-steps", "2", "--batch-size", "4", "--save-every", "2",
            "--straightness-pairs", "4", "--straightness-steps", "3", "--threads", "1"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "8 pairs of heun, 2 steps (3 NFE)" in out and "straightness S (student)" in out
    couplings = load_couplings(tmp_path / "r" / "couplings.pt")
    assert len(couplings) == 8 and couplings.config["teacher"]["kind"] == "GaussianDiffusion"
    student = load_pipeline(tmp_path / "r" / "model-1.pt")
    assert type(student) is RectifiedFlow and student.sampling_timesteps == 1


def test_reflow_refuses_what_is_not_a_trained_diffusion_model(tmp_path: Path, capsys) -> None:
    net = Unet(8, dim_mults=(1, 2), channels=1, resnet_block_groups=4)
    save_pipeline(net, tmp_path / "unet.pt")
    untrained = tiny_flow()
    save_checkpoint(tmp_path / "step0.pt", make_checkpoint(config=spec_of(untrained), step=0,
                    model=untrained.model.state_dict()))  # fmt: skip
    save_couplings(CouplingSet(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)), tmp_path / "c.pt")
    for name, message in [("unet.pt", "holds a 'Unet', not a trained diffusion model"), ("step0.pt", "step 0"),
                          ("c.pt", "holds a 'CouplingSet'")]:  # fmt: skip
        assert main(["reflow", str(tmp_path / name), "--pairs", "2", "--results", str(tmp_path / "r")]) == 2
        assert message in capsys.readouterr().err, name
