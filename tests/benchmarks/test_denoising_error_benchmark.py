"""benchmarks/denoising_error.py: each library's noising and ε-conversion against that library's own code, and the
script end to end on networks kept by a seconds-long peer_quality run. No quality is asserted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from benchmarks import denoising_error, peer_quality
from benchmarks.harness import contenders as libs
from benchmarks.harness import records
from benchmarks.harness.recipes import RECIPES

SIZE = libs.NetworkSize(32, (1, 2), 1, 8)  # diffusers' GroupNorm(32) needs 32 channels


class Oracle(nn.Module):
    """A 'network' that returns a fixed output whatever it is given (as a 1-tuple for diffusers' calling style)."""

    channels = 1

    def __init__(self, output: Tensor, *, as_tuple: bool = False) -> None:
        super().__init__()
        self.output, self.as_tuple = output, as_tuple

    def forward(self, *args, **kwargs):
        return (self.output,) if self.as_tuple else self.output


def _x0_eps(n: int = 6) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.rand(n, 1, 8, 8, generator=gen) * 2 - 1, torch.randn(n, 1, 8, 8, generator=gen)


@pytest.mark.parametrize("t", [0, 137, 999])
def test_noising_is_each_library_s_own_forward_process(t: int) -> None:
    from diffusers import DDPMScheduler

    x0, eps = _x0_eps()
    index = torch.full((len(x0),), t, dtype=torch.long)
    own = {
        libs.OURS: lambda c: c.trainable.q_sample(x0, index, eps),
        libs.LUCIDRAINS: lambda c: c.trainable.q_sample(x_start=x0, t=index, noise=eps),
        # the example's scheduler, built here from its documented config rather than taken from the contender
        libs.DIFFUSERS: lambda c: DDPMScheduler(1000, beta_schedule="linear").add_noise(x0, eps, index),
    }
    for library, noise in own.items():
        contender = libs.build(library, SIZE, {}, 1)
        # 2e-5: the libraries take √(1 − ᾱ_t) from float32 ᾱ_t, whose rounding at t = 0 (1 − ᾱ ≈ 1e-4) moves it by
        # ~3e-4 relative; another library's table would be off by 1e-2 or more
        assert denoising_error.noised(contender.alphas_cumprod, t, x0, eps) == pytest.approx(noise(contender), abs=2e-5)


@pytest.mark.parametrize(
    ("library", "recipe", "target"),
    [
        (libs.OURS, "default", "eps"),
        (libs.OURS, "v", "v"),
        (libs.OURS, "x0", "x0"),
        (libs.LUCIDRAINS, "default", "v"),
        (libs.DIFFUSERS, "default", "eps"),
    ],
)
def test_predict_eps_turns_each_objective_s_exact_output_into_the_noise(library: str, recipe: str, target: str) -> None:
    """A network that outputs the objective's exact target for (x_0, ε) must give back ε at every level."""
    contender = libs.build(library, SIZE, RECIPES[recipe] if library == libs.OURS else {}, 1)
    x0, eps = _x0_eps()
    table = denoising_error.log_snr(contender.alphas_cumprod)
    for lam in (-6.0, 0.0, 6.0):
        t = denoising_error.nearest_index(table, lam)
        ab = contender.alphas_cumprod.double()[t]
        alpha, sigma = ab.sqrt().float(), (1 - ab).sqrt().float()
        exact = {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0}[target]
        network: nn.Module = Oracle(exact, as_tuple=library == libs.DIFFUSERS)
        if library == libs.LUCIDRAINS:  # its EMA copy is the whole GaussianDiffusion around the network
            contender.trainable.model = network
            network = contender.trainable
        x_t = denoising_error.noised(contender.alphas_cumprod, t, x0, eps)
        eps_hat = contender.predict_eps(network, x_t, torch.full((len(x0),), t, dtype=torch.long))
        assert eps_hat == pytest.approx(eps, abs=2e-3 if lam == 6.0 else 2e-4), (library, recipe, lam)


def test_training_share_counts_the_time_indices_near_each_level() -> None:
    # λ_t = log(ᾱ/(1 − ᾱ)) = 0 for ᾱ = 1/2 and ±∞ at 1 and 0: one of four indices is near 0, none near the others
    shares = denoising_error.training_share(torch.tensor([1 - 1e-12, 0.5, 1e-12, 1e-12]))
    assert shares[denoising_error.LOG_SNR_GRID.index(0.0)] == 0.25 and sum(shares) == 0.25


@pytest.fixture(scope="module")
def kept(tmp_path_factory) -> Path:
    """The folder of a seconds-long peer_quality run of every library, seeds 0 and 1 (r.jsonl, cache/, and the kept
    networks in weights/). Tests that change the kept files work on a copy."""
    root = tmp_path_factory.mktemp("kept")
    peer_quality.main(
        ["--quick", "--minutes", "0.01", "--num-samples", "8", "--draws", "1", "--sample-steps", "2", "--jobs", "1",
         "--seeds", "0", "1", "--results", str(root / "r.jsonl"), "--cache", str(root / "cache"),
         "--keep-weights", str(root / "weights")]
    )  # fmt: skip
    return root


def test_the_script_reads_the_kept_networks_of_every_library(kept, tmp_path, capsys) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(kept / "weights", weights)
    capsys.readouterr()
    found = denoising_error.main(["--weights", str(weights), "--minutes", "0.01", "--quick"])
    here = f" on {records.cpu_model()}"
    assert sorted(found) == sorted(label + here for label in ["ours / default", libs.LUCIDRAINS, libs.DIFFUSERS])
    for entry in found.values():
        assert sorted(entry["errors"]) == [0, 1]
        for rows in entry["errors"].values():
            assert len(rows) == len(denoising_error.LOG_SNR_GRID) and all(mse > 0 for _, mse in rows)
    out = capsys.readouterr().out
    assert out.count("\n| ") == 2 + len(denoising_error.LOG_SNR_GRID)  # header, rule and one row per level
    with pytest.raises(SystemExit):
        denoising_error.main(["--weights", str(weights), "--minutes", "4", "--quick"])
    assert "no kept networks of digits at 4 minutes" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # EDM is continuous in time: no ᾱ table, a one-line error
        peer_quality.main(["--quick", "--minutes", "0.01", "--num-samples", "8", "--draws", "1", "--sample-steps",
                           "2", "--jobs", "1", "--seeds", "0", "--libraries", "ours", "--recipes", "edm",
                           "--results", str(tmp_path / "r.jsonl"), "--cache", str(tmp_path / "cache"),
                           "--keep-weights", str(weights)])  # fmt: skip
        denoising_error.main(["--weights", str(weights), "--minutes", "0.01", "--quick", "--recipe", "edm"])
    assert "--recipe edm: the denoising error is defined here for discrete schedules only" in capsys.readouterr().err


def test_networks_trained_on_another_cpu_get_their_own_column(kept, tmp_path, capsys) -> None:
    """A kept network whose figures name another CPU (its budget bought other steps) is not averaged with this
    machine's: same library and recipe, its own column."""
    weights = tmp_path / "weights"
    shutil.copytree(kept / "weights", weights)
    (figures,) = weights.glob("*-ours-default-seed1-*.json")
    figures.write_text(json.dumps({**json.loads(figures.read_text()), "cpu": "Another CPU"}))
    found = denoising_error.main(["--weights", str(weights), "--minutes", "0.01", "--quick"])
    ours = {label: sorted(entry["errors"]) for label, entry in found.items() if label.startswith("ours")}
    assert ours == {f"ours / default on {records.cpu_model()}": [0], "ours / default on Another CPU": [1]}
    assert sorted(found[f"{libs.DIFFUSERS} on {records.cpu_model()}"]["errors"]) == [0, 1]
