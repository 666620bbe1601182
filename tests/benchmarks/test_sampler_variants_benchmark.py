"""benchmarks/sampler_variants.py: its named DDIM variants are each library's own sampler (same network, same x_T,
same output), its clip modes differ where they should, and the script reproduces peer_quality's records from the
kept networks. No quality is asserted."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from benchmarks import peer_quality, sampler_variants
from benchmarks.harness import contenders as libs
from benchmarks.harness import peer_runs, records, stats
from benchmarks.harness.recipes import RECIPES
from denoising_diffusion import NoiseSchedule

SIZE = libs.NetworkSize(32, (1, 2), 1, 8)  # diffusers' GroupNorm(32) needs 32 channels


def _randomized(contender: libs.Contender) -> torch.nn.Module:
    """The contender's network with its output layers re-drawn, so that a fresh network's (often zeroed) output is
    not trivially 0 and x̂_0 leaves [−1, 1] at high noise, where the clip modes differ."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in contender.ema_target.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05 + p)
    return contender.ema_target.eval()


@pytest.mark.parametrize(
    ("library", "recipe", "variant"),
    [
        (libs.OURS, "default", "ours"),  # GaussianDiffusion.sample(sampler='ddim'), cosine schedule
        (libs.OURS, "eps_linear", "ours"),
        (libs.OURS, "eps_linear_keep_eps", "x0/linspace"),  # GaussianDiffusion(rederive_eps=False), written twice
        (libs.DIFFUSERS, "default", "diffusers"),  # DDIMScheduler.from_config(DDPMScheduler's) loop
        (libs.LUCIDRAINS, "default", "denoising-diffusion-pytorch"),  # its ddim_sample, v-objective
    ],
)
def test_a_named_variant_is_that_library_s_own_ddim(library: str, recipe: str, variant: str) -> None:
    steps, n, seed = 10, 4, 123
    torch.manual_seed(0)  # the network's initialization: the same whatever ran before
    contender = libs.build(library, SIZE, RECIPES[recipe] if library == libs.OURS else {}, steps)
    network = _randomized(contender)
    own = contender.sample(network, n, torch.Generator().manual_seed(seed))
    x_T = torch.randn((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))  # the x_T every library draws
    ours = sampler_variants.sample(contender, network, variant, x_T, steps)
    # the peers compute their step coefficients in float32, and on this random network x̂_0 at high noise is x_t
    # divided by √ᾱ_t ≈ 0.006, so their rounding reaches 3e-5 (denoising-diffusion-pytorch) and 5e-4 (diffusers)
    # in the images; every other variant differs by 0.026 or more (measured). Ours keeping ε̂ carries the same float32
    # rounding of x̂_0 from step to step (re-deriving ε̂ cancels it): 0.6-2.9e-5 over 5 initializations (measured)
    tolerance = {libs.OURS: 2e-5, libs.LUCIDRAINS: 1e-4, libs.DIFFUSERS: 1e-3}[library]
    if variant.startswith("x0/") and library == libs.OURS:
        tolerance = 1e-4
    assert ours == pytest.approx(own, abs=tolerance)
    # the test can tell samplers apart: the other clip modes on the same grid give other images
    clip, spacing = sampler_variants.parse_variant(variant)
    for other in set(sampler_variants.CLIPS) - {clip}:
        other_images = sampler_variants.sample(contender, network, f"{other}/{spacing.value}", x_T, steps)
        assert (other_images - own).abs().max() > 1e-2, other


def test_clip_modes_treat_x0_and_eps_as_documented() -> None:
    schedule = NoiseSchedule.from_name("linear", 1000)
    x_t = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 3
    eps = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    t = torch.full((3,), 900, dtype=torch.long)
    alpha, sigma = (c.float().view(-1, 1, 1, 1) for c in schedule.alpha_sigma_at(t))
    raw = (x_t - sigma * eps) / alpha
    assert raw.abs().max() > 1.5  # at t = 900 the clamp bites
    preds = {
        clip: sampler_variants.eps_denoiser(lambda x, _t: eps, schedule, clip)(x_t, t)
        for clip in sampler_variants.CLIPS
    }
    assert preds["none"].x0 == pytest.approx(raw, abs=1e-5) and torch.equal(preds["none"].eps, eps)
    assert torch.equal(preds["x0"].x0, raw.clamp(-1, 1)) and torch.equal(preds["x0"].eps, eps)
    assert torch.equal(preds["rederive"].x0, raw.clamp(-1, 1))
    assert alpha * preds["rederive"].x0 + sigma * preds["rederive"].eps == pytest.approx(x_t, abs=1e-5)


def test_schedule_of_rebuilds_the_table() -> None:
    table = NoiseSchedule.from_name("cosine", 1000).alphas_cumprod.float()
    assert sampler_variants.schedule_of(table).alphas_cumprod == pytest.approx(table.double(), rel=1e-6)


def test_a_bad_variant_names_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="CLIP in rederive, x0, none and SPACING in .*linspace"):
        sampler_variants.parse_variant("clamp/linspace")
    with pytest.raises(ValueError, match="or one of ours, diffusers"):
        sampler_variants.parse_variant("x0/evenly")


def test_the_script_reproduces_the_records_of_kept_networks(tmp_path, capsys) -> None:
    weights, peer_records, cache = tmp_path / "weights", tmp_path / "r.jsonl", tmp_path / "cache"
    common = ["--num-samples", "8", "--draws", "2", "--sample-steps", "3", "--quick", "--cache", str(cache)]
    peer_quality.main(
        ["--minutes", "0.01", "--jobs", "1", "--seeds", "0", "1", "--libraries", "ours", "diffusers",
         "--results", str(peer_records), "--keep-weights", str(weights), *common]
    )  # fmt: skip
    out = tmp_path / "variants.jsonl"
    argv = ["--weights", str(weights), "--minutes", "0.01", "--results", str(out), *common,
            "--networks", "ours", "diffusers", "--variants", "ours", "diffusers", "x0/linspace"]  # fmt: skip
    found = sampler_variants.main(argv)
    assert len(found) == 2 * 2 * 3
    # each network's own DDIM, sampled again from the kept weights, gives its benchmark record's distances
    recorded = {(r["library"], r["seed"]): r["fd"] for r in map(json.loads, peer_records.read_text().splitlines())}
    own = {libs.OURS: "rederive/linspace", libs.DIFFUSERS: "x0/leading"}
    for r in found:
        if r["variant"] == own[r["library"]]:
            assert r["fd"] == pytest.approx(recorded[r["library"], r["seed"]], rel=1e-4), r
    table = capsys.readouterr().out
    assert "| diffusers/default | rederive/linspace | 2 |" in table and "| ours/default | x0/leading | 2 |" in table
    lines = out.read_text().splitlines()
    assert len(lines) == 12
    assert {r["cpu"] for r in map(json.loads, lines)} == {records.cpu_model()}  # where the kept networks trained
    assert all(r["command"].startswith("PYTHONPATH=. python benchmarks/sampler_variants.py --weights") and r["date"]
               for r in map(json.loads, lines))  # fmt: skip
    sampler_variants.main(argv)  # everything is recorded: nothing is sampled again
    assert out.read_text().splitlines() == lines
    # asked for another variant only, each network's benchmark record stands for its own DDIM in the paired column
    capsys.readouterr()
    found = sampler_variants.main([*argv[:-3], "x0/linspace", "--peer-results", str(peer_records)])
    assert sorted((r["library"], r["seed"]) for r in found if r.get("source") == "peer_quality") == [
        (libs.DIFFUSERS, 0), (libs.DIFFUSERS, 1), (libs.OURS, 0), (libs.OURS, 1)
    ]  # fmt: skip
    by_key = {(r["library"], r["variant"], r["seed"]): sum(r["fd"]) / 2 for r in found}
    paired = [by_key[libs.OURS, "x0/linspace", s] - by_key[libs.OURS, "rederive/linspace", s] for s in (0, 1)]
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| ours/default | x0/linspace"))
    assert f"| {paired[0]:+.2f}, {paired[1]:+.2f} | {(paired[0] + paired[1]) / 2:+.2f} [" in row
    # --report prints the same table from the files alone, without the kept networks
    capsys.readouterr()
    reported = sampler_variants.main(["--report", *argv[2:-3], "x0/linspace", "--peer-results", str(peer_records)])
    assert sorted(map(json.dumps, reported)) == sorted(map(json.dumps, found))
    assert row in capsys.readouterr().out
    assert out.read_text().splitlines() == lines  # the records it borrowed are not written again
    with pytest.raises(SystemExit):
        sampler_variants.main([*argv[:-3], "clamp/linspace"])
    assert "variant 'clamp/linspace': expected CLIP/SPACING" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sampler_variants.main(argv[2:])
    assert "--weights DIR is required (or --report)" in capsys.readouterr().err


def test_paired_interval_is_the_t_interval_of_the_differences() -> None:
    # mean 1, sd 1, n = 3: half-width t95(2)·1/√3 = 4.303/1.732 = 2.484
    assert stats.paired_interval([0.0, 1.0, 2.0]) == "+1.00 [-1.48, +3.48]"
    assert stats.paired_interval([0.5]) == ""


def test_a_network_s_own_record_is_the_one_trained_on_its_cpu(tmp_path) -> None:
    """Seed s at one budget may have been trained on two CPUs (different step counts: two networks); the paired
    column must take the record of the CPU the kept network trained on, and records without a CPU are the Xeon's."""
    common = {"data": "digits", "library": libs.OURS, "recipe": "default", "seed": 2, "budget_cpu_s": 1920.0,
              "sample_steps": 50, "num_samples": 1000, "draws": 4, "device": "cpu", "x_T": "per_seed"}  # fmt: skip
    peer = tmp_path / "peer.jsonl"
    peer.write_text(
        json.dumps({**common, "fd": [1.0]}) + "\n" + json.dumps({**common, "cpu": "EPYC", "fd": [2.0]}) + "\n"
    )
    args = argparse.Namespace(data="digits", sample_steps=50, num_samples=1000, draws=4, noise="per_seed",
                              peer_results=peer)  # fmt: skip
    (epyc,) = sampler_variants.own_record(args, libs.OURS, "default", 2, 1920.0, "EPYC")
    (xeon,) = sampler_variants.own_record(args, libs.OURS, "default", 2, 1920.0, records.LEGACY_CPU)
    assert (epyc["fd"], epyc["cpu"], xeon["fd"]) == ([2.0], "EPYC", [1.0])
    assert sampler_variants.own_record(args, libs.OURS, "default", 2, 1920.0, "Another CPU") == []
    network = tmp_path / "net.pt"
    assert peer_runs.trained_on(network) == records.LEGACY_CPU  # figures from before the field
    network.with_suffix(".json").write_text(json.dumps({"cpu": "EPYC"}))
    assert peer_runs.trained_on(network) == "EPYC"
