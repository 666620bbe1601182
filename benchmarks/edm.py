"""EDM (Karras et al. 2022) against the discrete DDPM on the digits, trained for the same time: the distance against
network evaluations for EDM's Heun (with and without churn) and DPM-Solver++(2M), beside the DDPM sampled with 1000
ancestral steps.

Usage:  PYTHONPATH=. python benchmarks/edm.py [--cache DIR] [--seeds 0 1 2] [--jobs 2] [--threads 1] [--quick]

Everything but the process is benchmarks/score_sde.py's (data, evaluation classifier and features, floor, network,
training loop and steps, cache: the ddpm models are the same files): ``GaussianDiffusion(process="edm")`` with its
defaults (σ ∈ [0.002, 80], σ_data 0.5, log-normal σ training, λ(σ) = 1/c_out², the preconditioned network), trained
``train_steps`` steps from each seed. Per seed, 500 samples each:

* the reference: the ddpm model with ancestral DDPM at 1000 steps (1000 network evaluations);
* EDM with ``heun`` (deterministic, Alg. 1) at 5, 10 and 18 steps (9, 19 and 35 evaluations), with ``heun`` and
  churn (Alg. 2: S_churn = 10, S_noise = 1.003, all σ) at the same steps, and with ``dpmpp_2m`` at 10, 20 and 35 steps.

**The rule (fixed before measuring).** Per cell, mean ± standard error over the training seeds; EDM at a budget is
"at least as good as" the reference unless its mean exceeds the reference's by more than 2 se (se = √(se_a² + se_b²),
unpaired); "better" when it is lower by more than 2 se. The target of issue 13: some EDM cell at ≤ 35 evaluations
at least as good as the DDPM at 1000 steps.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import quality_vs_cost as qvc
from benchmarks import score_sde as base
from benchmarks._timing import machine_line
from denoising_diffusion.evaluation import feature_reference, real_floor

CHURN = (("s_churn", 10.0), ("s_noise", 1.003))
EDM_CELLS = (  # (sampler, steps, options)
    *(("heun", s, ()) for s in (5, 10, 18)),
    *(("heun", s, CHURN) for s in (5, 10, 18)),
    *(("dpmpp_2m", s, ()) for s in (10, 20, 35)),
)
REFERENCE = ("ddpm", 1000, ())


def cells(cfg: base.ScoreConfig, quick: bool) -> list[base.Cell]:
    scale = 0.02 if quick else 1.0  # --quick: the same cells at a few steps
    out = []
    for k in cfg.seeds:
        name, steps, options = REFERENCE
        out.append(base.Cell("ref", "ddpm", k, name, max(2, round(steps * scale)), 0, options))
        for name, steps, options in EDM_CELLS:
            out.append(base.Cell("edm", "edm", k, name, max(2, round(steps * (0.4 if quick else 1.0))), 0, options))
    return out


def report(results: list[dict], floor: Any, num_samples: int) -> str:
    by: dict[tuple, list[dict]] = {}
    for r in results:
        c = r["cell"]
        by.setdefault((c.table, c.sampler, c.steps, c.options), []).append(r)
    ref = next(v for k, v in by.items() if k[0] == "ref")
    ref_fd = [r["fd"] for r in ref]
    m, s = base.mean_se(ref_fd)
    first = f"| ddpm | ddpm, {ref[0]['cell'].steps} steps | {ref[0]['nfe']} | {m:.3f} ± {s:.3f} | reference |"
    lines = [
        f"real-vs-real floor (N = {num_samples}): {floor.mean:.3f} ± {floor.sd:.3f}",
        "",
        "| model | sampler | NFE | FD (mean ± se over seeds) | vs DDPM-1000 |",
        "| --- | --- | ---: | ---: | --- |",
        first,
    ]
    met = False
    for (table, sampler, steps, options), rs in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][3], kv[0][2])):
        if table != "edm":
            continue
        fds = [r["fd"] for r in rs]
        m, s = base.mean_se(fds)
        call = base.verdict(fds, ref_fd)
        good = call in ("lower", "no difference shown")
        met = met or (good and rs[0]["nfe"] <= 35)
        label = sampler + (" + churn" if options else "")
        word = {"lower": "better", "higher": "worse", "no difference shown": "as good (no difference shown)"}
        lines.append(f"| edm | {label}, {steps} steps | {rs[0]['nfe']} | {m:.3f} ± {s:.3f} | {word.get(call, call)} |")
    lines.append("")
    lines.append(f"target (EDM at <= 35 evaluations at least as good as DDPM-1000): {'met' if met else 'not met'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "denoising_diffusion_bench")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    cfg = replace(base.QUICK if args.quick else base.ScoreConfig(), processes=("ddpm", "edm"))
    if args.seeds:
        cfg = replace(cfg, seeds=tuple(args.seeds))
    torch.set_num_threads(args.threads)
    print(machine_line(), flush=True)
    train_x, train_y, held_x, _ = qvc.load_digits_split(0)
    net = qvc.train_classifier(train_x, train_y, steps=cfg.classifier_steps, seed=0)
    reference = feature_reference(net, held_x)
    floor = real_floor(reference, train_x, cfg.num_samples, draws=qvc.FLOOR_DRAWS, seed=2)
    jobs = [(p_, k, cfg, train_x, args.cache, args.threads) for p_ in cfg.processes for k in cfg.seeds]
    paths = {}
    for process, seed, path, _ in base._map(base._train_star, [(j,) for j in jobs], args.jobs):
        paths[process, seed] = path
    todo = [(c, paths[c.process, c.seed], cfg, reference, args.threads) for c in cells(cfg, args.quick)]
    results = []
    for r in base._map(base.run_cell, todo, args.jobs):
        c = r["cell"]
        print(f"  {c.process} seed {c.seed} {c.sampler} {c.steps} steps {dict(c.options)}: FD {r['fd']:.3f}, "
              f"{r['nfe']} NFE", flush=True)  # fmt: skip
        results.append(r)
    text = report(results, floor, cfg.num_samples)
    print(text, flush=True)
    return {"results": results, "report": text}


if __name__ == "__main__":
    main()
