"""The speed benchmarks run (at a seconds-long size): speed is measured there, never asserted here."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from benchmarks import compare_peers, gpu, growth, threads
from benchmarks.harness import records, subjects, timing


def test_compare_peers_quick_runs_and_records_its_rows(tmp_path, capsys) -> None:
    """All three libraries (peers skipped when not installed) at the quick size, timings only; with --results each
    library's row is appended with the run's command and machine, and the peers' rows carry their ratios to ours."""
    path = tmp_path / "compare_peers.jsonl"
    rows = compare_peers.main(["--quick", "--skip-missing", "--threads", "1", "--no-memory", "--results", str(path)])
    assert {r["config"] for r in rows} == {"quick"} and rows[0]["library"] == "ours"
    assert all(r["params_m"] > 0 and r["train_s"] > 0 and r["sample_s"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "| library | params | train step |" in out and "| config | ours / peer |" in out
    recorded = records.load(path)
    assert recorded == rows and all(r["command"].endswith("--results " + str(path)) for r in recorded)
    assert all(r["ours_over_peer"]["train_images_per_s"] > 0 for r in recorded[1:])
    compare_peers.main(["--quick", "--skip-missing", "--threads", "1", "--no-memory"])  # quick: nothing recorded
    assert records.load(path) == rows


def test_compare_peers_memory_child_sees_its_own_peak() -> None:
    """The memory child reports its own peak even when the parent's is larger (ru_maxrss would carry the parent's
    peak across exec and report 0); ours only, since the peers import slowly."""
    import torch

    parent_ballast = torch.ones(128 * 2**20)  # 512 MiB resident in the parent
    payload = {"config": asdict(subjects.QUICK), "library": "ours", "phase": "train"}
    assert timing.run_child("benchmarks.compare_peers", "memory_child", payload, 1) > 0
    del parent_ballast


def test_compare_peers_unknown_library_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="unknown libraries"):
        subjects.select_libraries(["ours", "nope"], skip_missing=True)


def test_growth_quick_runs(capsys) -> None:
    points = growth.main(["--quick", "--threads", "1", "--no-memory"])
    assert [p["size"] for p in points] == [8, 16] and all(p["flops"] > 0 and p["step_s"] > 0 for p in points)
    assert "GFLOP/s" in capsys.readouterr().out


def test_gpu_cpu_dry_run(capsys) -> None:
    """The accelerator script at its CPU dry-run size (bf16 autocast, no compile)."""
    rows = gpu.main(["--device", "cpu", "--skip-missing", "--repeats", "1"])
    assert rows and rows[0]["library"] == "ours" and rows[0]["train_flops"] > 0
    assert "share of peak" in capsys.readouterr().out


def test_compare_peers_profile_quick_runs(capsys) -> None:
    assert compare_peers.main(["--quick", "--profile", "--threads", "1"]) == []
    assert "| op | share |" in capsys.readouterr().out


def test_optimizations_quick_runs(capsys) -> None:
    """Every variant except compile at the quick size. Peak memory is measured in one child process per variant
    (seconds each, mostly importing torch), so here it runs once, in a child, for one variant; the others' memory
    columns are skipped (--memory-runs 0)."""
    from benchmarks import optimizations

    results = optimizations.main(["--quick", "--threads", "1", "--memory-runs", "0"])
    assert list(results) == [v for v in optimizations.VARIANTS if v not in optimizations.COMPILED]
    assert all(r["train_s"] > 0 and r["forward_s"] > 0 for r in results.values())
    assert all(r["memory_mib"] is None for r in results.values())
    assert "| variant | train step |" in capsys.readouterr().out
    payload = {"config": asdict(subjects.QUICK), "variant": next(iter(results))}
    assert timing.run_child("benchmarks.optimizations", "memory_child", payload, threads=1) >= 0


def test_optimizations_reference_variants_compute_the_same_network() -> None:
    """The 'before' (transposing attention) and 'recompute' variants are the same function as the defaults."""
    import types

    import torch

    from benchmarks import optimizations
    from denoising_diffusion import Unet
    from denoising_diffusion.nn import Attention, LinearAttention, ResnetBlock

    torch.manual_seed(0)
    net = Unet(16, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8).double()
    x, t = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([3, 7])
    expected = net(x, t)
    for module in net.modules():
        if isinstance(module, LinearAttention):
            module.forward = types.MethodType(optimizations._transposing_linear_forward, module)
        elif isinstance(module, Attention):
            module.forward = types.MethodType(optimizations._transposing_full_forward, module)
        elif isinstance(module, ResnetBlock):
            module.forward = types.MethodType(optimizations._recomputing_resnet_forward, module)
    torch.testing.assert_close(net(x, t), expected, rtol=1e-10, atol=1e-10)


def test_conv_floor_quick_runs(capsys) -> None:
    from benchmarks import conv_floor

    totals = conv_floor.main(["--quick", "--threads", "1"])
    assert totals["flops_forward"] > 0 and 0 < totals["train_best"] <= totals["train"]
    assert "Floor of a training step" in capsys.readouterr().out


def test_conv_floor_counts_the_networks_flops() -> None:
    """The recorded convolutions account for (nearly) all of the forward FLOPs FlopCounterMode sees."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks import conv_floor
    from denoising_diffusion import Unet

    config = subjects.QUICK
    calls = conv_floor.record_convs(config)
    torch.manual_seed(0)
    net = Unet(config.dim, dim_mults=config.dim_mults, channels=config.channels)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(
            torch.randn(config.batch, config.channels, config.image_size, config.image_size),
            torch.full((config.batch,), 5),
        )
    conv_flops = sum(v for k, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(k))
    assert sum(c.flops for c in calls) == conv_flops


def test_threads_quick_runs(capsys) -> None:
    """One 1-step job alone and beside a busy process, with --threads 1: the table, and CPU time measured."""
    table = threads.main(["--quick", "--settings", "one"])
    assert set(table) == {("--threads 1", "alone"), ("--threads 1", "busy")}
    assert all(runs.wall[0] > 0 and runs.cpu[0] > 0 for runs in table.values())
    assert "| --threads 1 |" in capsys.readouterr().out
