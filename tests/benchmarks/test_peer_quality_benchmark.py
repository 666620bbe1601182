"""benchmarks/peer_quality.py at a seconds-long size: every library's path, the results file, the rule, the GPU path's
options on the CPU. No timing or quality is asserted (those are the benchmark's output, not a test's)."""

from __future__ import annotations

import json
import math
import platform

import pytest
import torch

from benchmarks import peer_quality
from benchmarks.harness import contenders as libs
from benchmarks.harness import peer_loop, peer_runs, records, stats, tables

QUICK = ["--quick", "--minutes", "0.01", "--num-samples", "16", "--draws", "2", "--sample-steps", "3", "--jobs", "1"]


def _run(tmp_path, *extra: str) -> list[dict]:
    path = tmp_path / "results.jsonl"
    peer_quality.main([*QUICK, "--results", str(path), "--cache", str(tmp_path / "cache"), *extra])
    return records.load(path)


def test_every_library_runs_the_one_loop_and_records_a_complete_run(tmp_path, capsys):
    recorded = _run(tmp_path, "--seeds", "0", "--recipes", "default", "power_ema")
    assert sorted((r["library"], r["recipe"]) for r in recorded) == [
        ("denoising-diffusion-pytorch", "default"),
        ("diffusers", "default"),
        ("ours", "default"),
        ("ours", "power_ema"),
    ]
    for r in recorded:
        assert len(r["fd"]) == 2 and all(math.isfinite(d) and d >= 0 for d in r["fd"])
        assert r["steps"] >= 1 and r["train_s"] >= r["budget_cpu_s"] == pytest.approx(1.2) and r["compile_s"] == 0
        assert r["parameters"] > 0 and math.isfinite(r["floor_mean"]) and r["floor_sd"] > 0
        assert r["command"].startswith("PYTHONPATH=. python benchmarks/peer_quality.py --quick") and r["date"]
        assert r["machine"] and r["cpu"] == records.cpu_model() and r["benchmark"] == "peer_quality"
    out = capsys.readouterr().out
    assert "| ours / power_ema |" in out and "| diffusers |" in out and "floor" in out


def test_a_second_invocation_skips_recorded_runs_and_adds_only_new_seeds(tmp_path, capsys):
    first = _run(tmp_path, "--seeds", "0", "--libraries", "ours")
    second = _run(tmp_path, "--seeds", "0", "1", "--libraries", "ours")
    assert len(first) == 1 and len(second) == 2 and second[0] == first[0]
    assert "1 runs to do (1 already in" in capsys.readouterr().out


def test_gpu_path_options_run_on_the_cpu(tmp_path):
    """bf16 autocast and torch.compile (the eager backend: no inductor in the suite) go through the same loop."""
    (record,) = _run(
        tmp_path, "--seeds", "0", "--libraries", "ours", "--bf16", "--compile", "--compile-backend", "eager"
    )
    assert record["bf16"] is True and record["compile"] == "eager"
    # the compiling first steps run before the budget clock: timed on their own, then at least one budgeted step
    assert record["compile_s"] > 0 and record["steps"] >= peer_loop.COMPILE_WARMUP_STEPS + 1
    assert record["total_train_wall_s"] >= record["train_wall_s"]


def test_unknown_recipe_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _run(tmp_path, "--recipes", "fastest")
    assert "unknown recipe(s) ['fastest']; known: default" in capsys.readouterr().err


def _cell(scores, within=0.0):
    return stats.cell([{"fd": [s - within, s + within], "steps": 1} for s in scores])


def test_the_rule_calls_a_difference_only_when_95_percent_intervals_do_not_overlap():
    low, high = _cell([1.0, 1.1, 0.9]), _cell([2.0, 2.1, 1.9])
    assert stats.compare(low, high) == "lower" and stats.compare(high, low) == "higher"
    assert stats.compare(_cell([1.0, 1.5, 0.5]), _cell([1.6, 2.4, 1.2])) == "no difference shown"
    assert stats.compare(low, high, scale=0.5) == "no difference shown"  # 1.0 ± 0.25 against 1.0 ± 0.12
    assert stats.compare(_cell([1.0]), high) == "too few seeds"
    # mean ± t·sd/√n with n = 3: t(2 dof) = 4.303
    lo, hi = low.interval
    assert hi - low.mean == pytest.approx(4.303 * 0.1 / math.sqrt(3))


def test_sampling_noise_is_the_pooled_within_run_spread():
    c = _cell([1.0, 3.0], within=0.5)  # each run's draws are s ± 0.5: variance 0.5
    assert c.sampling_sd == pytest.approx(math.sqrt(0.5))
    assert c.mean == pytest.approx(2.0) and c.sd == pytest.approx(math.sqrt(2.0))


def test_a_malformed_results_line_is_named(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"a": 1}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"r.jsonl:2: not a JSON line"):
        records.load(path)


def test_data_order_is_the_seed_s_and_the_same_for_every_library():
    a, b = peer_loop.batches(100, 3), peer_loop.batches(100, 3)
    first = [next(a) for _ in range(3)]
    assert all(torch.equal(x, next(b)) for x in first)
    assert sorted(torch.cat(first[:1] + [next(a)]).tolist()) != list(range(100))  # batches of 64 without repeats
    assert len(set(first[0].tolist())) == 64


def test_every_library_starts_each_draw_from_the_same_noise():
    """Common random numbers: the x_T each library's sampler feeds its network first is the same tensor, so a
    fixed draw's luck is shared by all libraries instead of being one library's bias in every run."""
    size = libs.NetworkSize(32, (1, 2), 1, 8)
    first_inputs = {}
    for library in libs.LIBRARIES:
        torch.manual_seed(0)
        contender = libs.build(library, size, {}, 2)
        network = contender.ema_target.model if library == libs.LUCIDRAINS else contender.ema_target
        seen: list[torch.Tensor] = []
        network.register_forward_pre_hook(lambda _module, args, seen=seen: seen.append(args[0].clone()))
        torch.manual_seed(999)  # a global state that must not leak into the draw
        contender.sample(contender.ema_target, 4, torch.Generator().manual_seed(123))
        first_inputs[library] = seen[0]
    expected = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(123))
    for library, x_T in first_inputs.items():
        assert torch.equal(x_T, expected), library


def test_old_lucidrains_records_keep_their_own_noise_protocol():
    old = {"library": "denoising-diffusion-pytorch", "seed": 0}
    assert peer_runs.noise_of(old) == peer_runs.OWN_NOISE
    assert peer_runs.noise_of({"library": "ours"}) == peer_runs.SHARED_NOISE
    assert peer_runs.noise_of({**old, "x_T": peer_runs.SHARED_NOISE}) == peer_runs.SHARED_NOISE
    assert peer_quality.run_key(old) != peer_quality.run_key({**old, "x_T": peer_runs.SHARED_NOISE})


def test_runs_on_another_cpu_are_another_experiment():
    """A CPU-second budget buys each CPU its own number of steps, so the CPU is part of a run's key (a rerun on
    another machine trains its own runs) and of a report's cell; records without the field are the first Xeon's."""
    old = {"library": "ours", "recipe": "default", "seed": 0}
    assert records.cpu_of(old) == records.LEGACY_CPU
    assert peer_quality.run_key(old) != peer_quality.run_key({**old, "cpu": "AMD EPYC"})
    assert peer_quality._job_record(_job(0, libs.OURS, peer_runs.PER_SEED_NOISE))["cpu"] == records.cpu_model()
    common = {"data": "digits", "library": "ours", "recipe": "default", "budget_cpu_s": 120.0, "sample_steps": 50,
              "num_samples": 10, "draws": 1, "device": "cpu", "x_T": "per_seed", "floor_mean": 1.0, "floor_sd": 0.1,
              "steps": 100, "fd": [5.0]}  # fmt: skip
    runs = [{**common, "seed": 0}, {**common, "seed": 1, "fd": [6.0]}, {**common, "seed": 0, "cpu": "AMD EPYC"}]
    text = tables.peer_quality(runs)
    assert text.count("| ours / default |") == 2 and f"cpu ({records.LEGACY_CPU})" in text and "cpu (AMD EPYC)" in text


def test_a_recipe_of_ours_is_judged_against_ours_default_by_the_rule():
    """The report's last column applies the benchmark's rule to a lever (a recipe of ours) against ours' default
    in the same cell, so a screen's verdict is the tool's, not a hand comparison."""
    common = {
        "data": "digits", "library": "ours", "budget_cpu_s": 480.0, "sample_steps": 50, "num_samples": 10,
        "draws": 1, "device": "cpu", "x_T": "per_seed", "floor_mean": 1.0, "floor_sd": 0.1, "steps": 100,
    }  # fmt: skip
    fds = {"default": (30.0, 31.0, 32.0), "worse": (50.0, 50.5, 51.0), "level": (29.0, 33.0, 31.0)}
    runs = [{**common, "recipe": r, "seed": i, "fd": [fd]} for r, fd_s in fds.items() for i, fd in enumerate(fd_s)]
    rows = {}
    for line in tables.peer_quality(runs).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0].startswith("ours"):
            rows[cells[0]] = cells[-1]
    assert rows == {"ours / default": "", "ours / worse": "higher", "ours / level": "no difference shown"}


def test_the_cpu_is_named_with_its_family_model_and_stepping():
    """Virtual machines show generic model names ("AMD EPYC" for CPUs that differ by a third in steps per
    CPU-second), so the name carries /proc/cpuinfo's numbers; the first processor's fields are taken."""
    info = "processor\t: 0\ncpu family\t: 23\nmodel\t\t: 1\nmodel name\t: AMD EPYC\nstepping\t: 2\n\n"
    info += info.replace("model\t\t: 1", "model\t\t: 49").replace("processor\t: 0", "processor\t: 1")
    assert records.cpu_model(info) == "AMD EPYC (cpu family 23, model 1, stepping 2)"
    assert records.cpu_model("model name\t: Some CPU\n") == "Some CPU"
    assert records.cpu_model("flags\t: fpu\n") == (platform.processor() or "unknown")


def test_a_network_kept_on_another_cpu_is_refused_by_name(tmp_path):
    """With the CPU in the run key, a rerun on another machine must train its own network, not sample one whose
    budget bought another CPU's steps from the shared --keep-weights folder."""
    weights = tmp_path / "weights"
    argv = ["--seeds", "0", "--libraries", "ours", "--keep-weights", str(weights)]
    job = peer_quality.plan(peer_quality._parse([*QUICK, *argv]))[0]
    path = peer_quality.weights_path(job)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # never read: the check comes first
    path.with_suffix(".json").write_text(json.dumps({"steps": 5, "cpu": "Another CPU 9000"}))
    with pytest.raises(SystemExit, match=r"seed0-1.2s-cpu.pt was trained on Another CPU 9000, and this machine"):
        _run(tmp_path, *argv)
    path.with_suffix(".json").write_text(json.dumps({"steps": 5}))  # figures from before the field: the Xeon's
    assert f"trained on {records.LEGACY_CPU}, and this machine" in (peer_runs.kept_elsewhere(path, "cpu") or "")
    path.with_suffix(".json").write_text(json.dumps({"steps": 5, "cpu": records.cpu_model()}))
    assert peer_runs.kept_elsewhere(path, "cpu") is None


def _job(seed: int, library: str, noise: str) -> peer_quality.Job:
    return peer_quality.Job("digits", library, "default", seed, 1.0, 3, 4, 3, 1, "cpu", False, None, noise)


def test_per_seed_x_T_changes_with_the_training_seed_and_is_shared_by_the_libraries(monkeypatch):
    """The default protocol: each training seed evaluates on its own x_T sets (so a set's luck lands in the seed
    spread), and for one seed every library gets the same generator seeds (the comparison stays paired)."""
    seen: dict[tuple[int, str, str], list[int]] = {}

    class Recorder:
        def sample(self, _model, n, gen):
            seen.setdefault(key, []).append(gen.initial_seed())
            return torch.zeros(n, 1, 8, 8)

    monkeypatch.setattr(peer_quality, "frechet_distance_to", lambda _reference, _images: 0.0)
    for seed in (0, 1):
        for library in libs.LIBRARIES:
            for noise in (peer_runs.PER_SEED_NOISE, peer_runs.SHARED_NOISE):
                key = (seed, library, noise)
                peer_quality.evaluate(_job(seed, library, noise), None, Recorder(), None)
    for noise in (peer_runs.PER_SEED_NOISE, peer_runs.SHARED_NOISE):
        for seed in (0, 1):
            assert len({tuple(seen[seed, lib, noise]) for lib in libs.LIBRARIES}) == 1
            assert len(set(seen[seed, libs.OURS, noise])) == 3  # three draws, three different sets
    per_seed = [set(seen[s, libs.OURS, peer_runs.PER_SEED_NOISE]) for s in (0, 1)]
    assert not per_seed[0] & per_seed[1]  # no set is reused by another training seed
    assert seen[0, libs.OURS, peer_runs.SHARED_NOISE] == seen[1, libs.OURS, peer_runs.SHARED_NOISE]
    assert not per_seed[0] & set(seen[0, libs.OURS, peer_runs.SHARED_NOISE])  # disjoint from the old fixed sets


def test_the_x_T_protocol_is_part_of_the_results_key(tmp_path):
    (per_seed,) = _run(tmp_path, "--seeds", "0", "--libraries", "ours")
    (_, shared) = _run(tmp_path, "--seeds", "0", "--libraries", "ours", "--x-t", "shared")
    assert per_seed["x_T"] == peer_runs.PER_SEED_NOISE and shared["x_T"] == peer_runs.SHARED_NOISE
    assert peer_runs.noise_of(per_seed) == peer_runs.PER_SEED_NOISE


def test_costs_price_the_plan_from_measured_steps(tmp_path, capsys):
    """--costs trains nothing to the budget and writes no results: one row per library with positive measured
    costs, the steps the budget buys = budget / step cost, and the plan's total."""
    peer_quality.main([*QUICK, "--costs", "--seeds", "0", "1", "--results", str(tmp_path / "r.jsonl")])
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| digits |")]
    assert sorted(r[1].strip() for r in rows) == sorted(f"{lib}/default" for lib in libs.LIBRARIES)
    for row in rows:
        step_s, budget, steps = float(row[2]), float(row[4]), float(row[5])
        assert step_s > 0 and float(row[3]) > 0 and steps == pytest.approx(budget / step_s, rel=0.02, abs=1)
    assert "6 runs: about" in out and not (tmp_path / "r.jsonl").exists()


def test_costs_time_sampling_at_each_run_s_own_sample_count(tmp_path, monkeypatch, capsys):
    """Per image, a batch of 500 at 3x32x32 costs about twice a batch of 16, so --costs samples the run's own count."""
    seen = []
    monkeypatch.setattr(peer_loop, "measure_cost", lambda data, library, recipe, n: seen.append(n) or
                        peer_loop.Cost(0.1, 0.001))  # fmt: skip
    peer_quality.main([*QUICK, "--costs", "--num-samples", "7", "--libraries", "ours", "--seeds", "0"])
    assert seen == [7]


def test_a_cost_leaves_out_the_warm_up_steps_and_takes_the_median_of_the_timed_ones(monkeypatch):
    """A fresh process's first steps are slow (its allocator is still growing): they are run but not timed."""
    slow = [100.0] * peer_loop.COST_WARMUP_STEPS
    timed = [9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0]  # median 5; with the warm-up counted it would be 7
    assert len(timed) == peer_loop.COST_TRAIN_STEPS
    readings, now = [], 0.0
    for elapsed in [*slow, *timed, 0.08]:  # the training steps, then the timed sampling call
        readings += [now, now + elapsed]
        now += elapsed
    clock = iter(readings)
    monkeypatch.setattr(peer_loop.time, "process_time", lambda: next(clock))
    cost = peer_loop.measure_cost(peer_runs.load_data("digits", quick=True), libs.OURS, "default", 10)
    assert cost.train_step_s == 5.0
    assert cost.image_step_s == pytest.approx(0.08 / (10 * peer_loop.COST_SAMPLE_STEPS))


def test_kept_weights_reproduce_the_recorded_distances(tmp_path):
    """--keep-weights saves each run's EMA state dict; loaded into a freshly built contender it samples the draws the
    record holds (so draws can be added later without retraining)."""
    weights = tmp_path / "weights"
    recorded = _run(tmp_path, "--seeds", "1", "--libraries", "ours", "diffusers", "--keep-weights", str(weights))
    data = peer_runs.load_data("digits", quick=True)
    classifier = peer_runs.feature_classifier("digits", data, tmp_path / "cache", quick=True)
    reference = peer_quality.feature_reference(classifier, data.heldout)
    jobs = peer_quality.plan(peer_quality._parse([*QUICK, "--seeds", "1", "--keep-weights", str(weights)]))
    for r in recorded:
        job = next(j for j in jobs if j.library == r["library"])
        contender = libs.build(job.library, data.size, {}, job.sample_steps)
        contender.ema_target.load_state_dict(torch.load(peer_quality.weights_path(job), weights_only=True))
        assert peer_quality.evaluate(job, contender.ema_target.eval(), contender, reference) == pytest.approx(
            r["fd"], rel=1e-5
        )
    assert sorted(p.name for p in weights.iterdir()) == [
        "digits-diffusers-default-seed1-1.2s-cpu.json",
        "digits-diffusers-default-seed1-1.2s-cpu.pt",
        "digits-ours-default-seed1-1.2s-cpu.json",
        "digits-ours-default-seed1-1.2s-cpu.pt",
    ]


def test_more_draws_sample_the_kept_network_instead_of_retraining(tmp_path):
    weights = ["--seeds", "0", "--libraries", "ours", "--keep-weights", str(tmp_path / "weights")]
    (first,) = _run(tmp_path, *weights)
    more = _run(tmp_path, *weights, "--draws", "3")[-1]  # argparse keeps the last --draws
    assert more["draws"] == 3 and more["weights_reused"] is True and "weights_reused" not in first
    assert (more["steps"], more["train_s"]) == (first["steps"], first["train_s"])
    assert more["fd"][:2] == pytest.approx(first["fd"], rel=1e-5)  # the same network, the same first two x_T sets
