"""Markdown tables of the digits benchmarks (quality_vs_cost, guidance_scale, classifier_guidance, score_sde, edm,
flow, denoising_error) from their records: what each script prints after a run, and what the README shows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from denoising_diffusion import SAMPLERS

from . import stats
from .tables import markdown, pm

Record = dict[str, Any]


# ----- quality_vs_cost: one sample set per sampler and budget -------------------------------------------------------


def _registry_order(sampler: str) -> int:
    """A sampler's place in the SAMPLERS registry (the table's row order; JSON keeps no order)."""
    names = [name.value for name in SAMPLERS]
    return names.index(sampler) if sampler in names else len(names)


def _by_scale(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """A summary keyed by scale strings, in increasing scale (JSON keeps no order)."""
    return sorted(summary.items(), key=lambda kv: float(kv[0]))


def quality_vs_cost(runs_: Sequence[Record]) -> str:
    """Per run: one row per sampler, one column per budget ('(n)' marks cells that used n < budget evaluations), the
    floor row, the floor's spread, and the target's verdict."""
    parts = []
    for r in runs_:
        budgets, (floor, floor_sd) = r["budgets"], r["floor"]
        table = [[name, *("-" if str(b) not in row else f"{row[str(b)][0]:.2f}" +
                          ("" if row[str(b)][1] == b else f" ({row[str(b)][1]})") for b in budgets)]
                 for name, row in sorted(r["rows"].items(), key=lambda kv: _registry_order(kv[0]))]  # fmt: skip
        table.append(["real vs real (floor)", *(f"{floor:.2f}" for _ in budgets)])
        text = markdown(["sampler", *(f"NFE {b}" for b in budgets)], table, "l" + "r" * len(budgets))
        text += (f"\n\nfloor: mean ± sd over 20 random sets of {r['config']['num_samples']} training images: "
                 f"{floor:.2f} ± {floor_sd:.2f} (the sd is the sampling noise of any one cell)")  # fmt: skip
        if r.get("target"):
            t = r["target"]
            c, ref = (" ".join(f"{v:.2f}" for v in t[k]) for k in ("candidate", "reference"))
            text += (f"\ntarget: DPM-Solver++(2M) @ 20 NFE [{c}] vs DDPM @ 1000 NFE [{ref}] ({len(t['candidate'])} "
                     f"draws each): ratio of means {t['ratio']:.3f} ± {t['ratio_se']:.3f} (standard error); within "
                     f"10% (judged at ± 2 se): {t['status']}")  # fmt: skip
        parts.append(text)
    return "\n\n".join(parts)


# ----- guidance_scale and classifier_guidance: accuracy and distance against the guidance scale ---------------------


def _pair(values: Sequence[Any], digits: int = 2) -> str:
    """ "mean ± sd" of a (mean, sd) pair; the mean alone when the sd was not recorded."""
    mean, sd = values
    return f"{mean:.{digits}f}" if sd is None else pm(mean, sd, digits)


def guidance_scale(runs_: Sequence[Record]) -> str:
    """Per run: the per-scale table (mean ± sd over seeds), the floors and the target's verdict."""
    parts = []
    for r in runs_:
        balanced = r["balanced_floor"][0]
        table = [[f"{float(s):g}", _pair(row["acc"], 3), _pair(row["fd"]), _pair(row["ratio"]),
                  pm(row["fd"][0] - balanced, row["fd"][1]), pm(row["diff"], row["diff_se"]),
                  f"{row['noise_acc']:.3f}, {row['noise_fd']:.2f}", row["status"]]
                 for s, row in _by_scale(r["summary"])]  # fmt: skip
        n, cfg = len(r["config"]["seeds"]), r["config"]
        parts.append(
            markdown(
                [
                    "scale",
                    "accuracy",
                    "Frechet distance",
                    "FD / FD(s=1)",
                    "FD − balanced floor",
                    "FD − 1.5·FD(s=1) (± se)",
                    "sample noise (sd of one draw): accuracy, FD",
                    "target at s",
                ],
                table,
                "rrrrrrr",
            )  # fmt: skip
            + f"\n\nmean ± sd over the {n} training seeds of each seed's mean over {cfg['sample_draws']} draws; "
            "the last columns: standard error of the paired difference, and the within-model sd of a single draw. "
            f"Real held-out digits: accuracy {r['accuracy']:.3f}; floor (N = {10 * cfg['per_class']}) random training "
            f"subsets {_pair(r['floor'])}, class-balanced {_pair(r['balanced_floor'])} (mean ± sd over 20 subsets).\n"
            f"target: accuracy >= 0.95 at some scale with FD <= 1.5 x FD(s=1), judged at ± 2 standard errors over "
            f"seeds: {r['verdict']}"
        )
    return "\n\n".join(parts)


CG, CFG = "classifier guidance", "classifier-free"


def classifier_guidance_fields(result: dict[str, Any], ev: Any) -> dict[str, Any]:
    """classifier_guidance's record fields from its scores (``result``) and its evaluation setup (``ev``)."""
    summary = {f"{s:g}": {"cg": result["summary"][CG, s], "cfg": result["summary"][CFG, s]}
               for s in sorted({s for _, s in result["summary"]})}  # fmt: skip
    first, comparisons = result["first_reached"], result["comparisons"]
    if first is None:
        headline = "R2: classifier guidance reaches the conditional model's accuracy at none of the scales"
    else:
        d, dse, dcall = comparisons[first]["cost"]
        headline = (f"R2: classifier guidance first reaches the conditional model's accuracy (within 0.01 at 2 se) at "
                    f"s = {first:g}; R3: its distance there is {d:+.2f} ± {dse:.2f} (se) from the conditional model's "
                    f"({comparisons[first]['cost_ratio']:.2f}x): {dcall}")  # fmt: skip
    return {
        "accuracy": ev.accuracy, "floor": (ev.floor.mean, ev.floor.sd),
        "balanced_floor": (ev.balanced_floor.mean, ev.balanced_floor.sd), "summary": summary,
        "comparisons": {f"{s:g}": c for s, c in comparisons.items()}, "headline": headline,
        "guide_heldout": {str(t): v for t, v in result["guide_heldout"].items()},
        "sets": [[system, k, s, d, float(v[0]), v[1]] for (system, k, s, d), v in result["cells"].items()],
    }  # fmt: skip


def _noise(row: Record) -> str:
    """The sample noise of one draw (accuracy, distance), or "-" where it was not recorded."""
    return f"{row['noise_acc']:.3f}, {row['noise_fd']:.2f}" if "noise_acc" in row else "-"


def classifier_guidance(runs_: Sequence[Record], *, detail: bool = True) -> str:
    """Per run: the guides' held-out accuracy, both systems per scale (mean ± sd over seeds; sample noise), the
    comparisons R1-R3 and the headline; with ``detail``, every sample set and the per-class accuracies too."""
    parts = []
    for r in runs_:
        heldout = ", ".join(f"t = {t}: {_pair(v, 3)}" for t, v in _by_scale(r["guide_heldout"]))
        parts.append(f"guides' held-out accuracy on x_t (mean ± sd over seeds): {heldout}")
        table = [[s, _pair(row["cg"]["acc"], 3), _pair(row["cg"]["fd"]), _noise(row["cg"]),
                  _pair(row["cg"]["guide_self"], 3), _pair(row["cfg"]["acc"], 3), _pair(row["cfg"]["fd"]),
                  _noise(row["cfg"])] for s, row in _by_scale(r["summary"])]  # fmt: skip
        parts.append(markdown(["scale", "CG accuracy", "CG Frechet distance", "CG sample noise: acc, FD",
                               "guide's own accuracy on its samples", "CFG accuracy", "CFG Frechet distance",
                               "CFG sample noise: acc, FD"], table, "rrrrrrrr"))  # fmt: skip
        parts.append(
            f"Floors (N = 500): random training subsets {_pair(r['floor'])}, class-balanced "
            f"{_pair(r['balanced_floor'])}; evaluator accuracy on real held-out digits {r['accuracy']:.3f}"
        )
        if r.get("comparisons"):
            rows = [[s, *(f"{c[k][0]:+.3f} ± {c[k][1]:.3f}: {c[k][2]}" for k in ("acc", "fd", "reach", "cost")),
                     f"{c['cost_ratio']:.2f}x"] for s, c in _by_scale(r["comparisons"])]  # fmt: skip
            parts.append(markdown(["scale", "R1 accuracy CG − CFG (± se)", "R1 FD CG − CFG (± se)",
                                   "R2 accuracy CG − CFG(s=1) (± se)", "R3 FD CG − CFG(s=1) (± se)", "FD ratio"],
                                  rows, "rrrrrr"))  # fmt: skip
        parts.append(r["headline"])
        if detail and r.get("sets"):
            sets = [[sy, k, f"{s:g}", d, f"{a:.3f}", f"{f:.2f}"] for sy, k, s, d, a, f in r["sets"]]
            parts.append("every sample set\n\n" + markdown(
                ["system", "seed", "scale", "draw", "accuracy", "Frechet distance"], sets, "lrrrrr"))  # fmt: skip
            parts.append("per-class accuracy (mean over seeds and draws)\n\n" + markdown(
                ["system", "scale", *map(str, range(10))],
                [[name, s, *(f"{a:.2f}" for a in row[key]["per_class"])] for s, row in _by_scale(r["summary"])
                 for key, name in (("cg", CG), ("cfg", CFG))], "l" + "r" * 11))  # fmt: skip
    return "\n\n".join(parts)


# ----- score_sde and edm: processes and samplers at equal training, mean ± se over seeds -----------------------------

CALLS = {"higher": " (worse)", "lower": " (better)"}


def _budget_cell(cell: Record | None, budget: int) -> str:
    """FD ± se, "[n]" when the sampler used fewer than ``budget`` evaluations, and the call against the reference."""
    if cell is None:
        return "-"
    used = "" if cell["nfe"] == budget else f" [{cell['nfe']:.0f}]"
    return pm(*cell["fd"]) + used + CALLS.get(cell["call"], "")


def score_sde(runs_: Sequence[Record]) -> str:
    """Per run: table A (equal training), table B (the vp models against network evaluations) and the ODE."""
    parts = []
    for r in runs_:
        a = [[row["process"], f"{row['train_cpu_s']:.0f}", pm(*row["common"]), row["call"], row["own"],
              pm(*row["own_fd"]), f"{row['own_nfe']:.0f}"] for row in r["table_a"]]  # fmt: skip
        b = [[row["sampler"], *(_budget_cell(row["cells"].get(str(budget)), budget) for budget in r["budgets"])]
             for row in r["table_b"]]  # fmt: skip
        ode = [["ode", f"{o['tol']:g}", f"{o['nfe']:.0f}", pm(*o["fd"])] for o in r["ode"]]
        parts += [
            f"real-vs-real floor (N = {r['config']['num_samples']}): {pm(*r['floor'])}",
            "Table A: equal training (mean ± se over seeds; CPU s of training per seed; \"vs ddpm\" compares the "
            "DPM-Solver++(2M) column with the ddpm row by the rule)",
            markdown(["process", "train CPU s", "DPM-Solver++(2M), 50 steps", "vs ddpm", "own sampler", "FD", "NFE"],
                     a, "lrrllrr"),
            "Table B: vp models, distance against network evaluations (mean ± se over seeds; [n]: the evaluations "
            "used when below the budget; (worse) / (better): against DPM-Solver++(2M) at the same budget)",
            markdown(["sampler", *(f"NFE {b}" for b in r["budgets"])], b, "l" + "r" * len(r["budgets"])),
            markdown(["adaptive ODE (dopri5)", "rtol = atol", "mean NFE used", "FD"], ode, "lrrr"),
        ]  # fmt: skip
    return "\n\n".join(parts)


def edm(runs_: Sequence[Record]) -> str:
    """Per run: the floor, each EDM cell against the DDPM reference, and the target's verdict."""
    parts = []
    for r in runs_:
        rows = [[row["model"], row["sampler"], f"{row['nfe']:.0f}", pm(*row["fd"]), row["call"]] for row in r["rows"]]
        parts += [f"real-vs-real floor (N = {r['config']['num_samples']}): {pm(*r['floor'])}",
                  markdown(["model", "sampler", "NFE", "FD (mean ± se over seeds)", "vs DDPM-1000"], rows, "llrr"),
                  f"target (EDM at <= 35 evaluations at least as good as DDPM-1000): {r['target']}"]  # fmt: skip
    return "\n\n".join(parts)


# ----- flow: flow matching, DDPM, EDM and the 2-rectified flow at few evaluations, mean ± sd over seeds --------------

FLOW_STUDENT = "2-rectified flow"
FLOW_TARGET_NFE = (1, 2, 4)  # issue 33: the 2-rectified flow with Euler below every DDPM sampler at these budgets
Summary = tuple[float, float, int]  # mean, sd, seeds


def flow_cell(record: Record) -> Summary:
    """A flow record's (mean, sd, seeds): from its per-seed distances, or, in a record transcribed from a table of
    mean ± sd (per-seed values unknown), the ``fd`` = (mean, sd) it carries over its seeds."""
    if record.get("fd_per_seed") is not None:
        return (*stats.mean_sd(record["fd_per_seed"]), len(record["fd_per_seed"]))
    mean, sd = record["fd"]
    return mean, sd, len(record["seed"])


def flow_target(cells: dict[tuple[str, str, int], Summary]) -> tuple[str, list[list[str]]]:
    """The target's status by flow.py's rule ('met': the 2-rectified flow with Euler lower than every DDPM sampler at
    each of FLOW_TARGET_NFE with a difference shown; 'not met': a DDPM cell lower with a difference shown; else
    'undecided') and one row per comparison: NFE, DDPM sampler, both cells and the call."""
    rows, calls = [], []
    for nfe in FLOW_TARGET_NFE:
        ours = cells.get((FLOW_STUDENT, "euler", nfe))
        ddpm = [(sampler, c) for (model, sampler, budget), c in cells.items() if model == "ddpm" and budget == nfe]
        if ours is None or not ddpm:
            calls.append("missing")
            continue
        for sampler, theirs in ddpm:
            calls.append(stats.summary_verdict(ours, theirs))
            rows.append([str(nfe), sampler, pm(*theirs[:2]), pm(*ours[:2]), calls[-1]])
    status = "met" if set(calls) == {"lower"} else "not met" if "higher" in calls else "undecided"
    return status, rows


def flow(run: Sequence[Record], *, detail: bool = False) -> str:
    """One run: the distance of every model and sampler per NFE budget (mean ± sd over seeds; "(n)": the evaluations
    used when below the budget), the floor, the setting and the target's verdict; with ``detail``, its comparisons."""
    summary = {(r["model"], r["sampler"], r["nfe"]): flow_cell(r) for r in run}
    used = {(r["model"], r["sampler"], r["nfe"]): r["nfe_used"] for r in run}
    budgets = sorted({r["nfe"] for r in run})
    rows = [[model, sampler, *("-" if (model, sampler, b) not in summary else pm(*summary[model, sampler, b][:2])
                               + ("" if used[model, sampler, b] == b else f" ({used[model, sampler, b]})")
                               for b in budgets)]
            for model, sampler in dict.fromkeys((r["model"], r["sampler"]) for r in run)]  # fmt: skip
    first, cfg = run[0], run[0]["config"]
    rows.append(["real vs real (floor)", "", *(pm(*first["floor"]) for _ in budgets)])
    seeds = "per-seed values in the records" if all(r.get("fd_per_seed") is not None for r in run) else (
        "per-seed values not recorded")  # fmt: skip
    status, comparisons = flow_target(summary)
    wins = sum(row[-1] == "lower" for row in comparisons)
    parts = [
        f"Unet dim {cfg['dim']}, mults (1, 2); {cfg['train_steps']} training steps (batch {cfg['batch_size']}, lr "
        f"{cfg['lr']:g}); the 2-rectified flow: {cfg['pairs']} couplings by Heun ({cfg['coupling_steps']} steps) "
        f"from the flow model, then {cfg['reflow_steps']} steps more. Fréchet distance of {cfg['num_samples']} "
        f"samples to the held-out digits, mean ± sd over {len(first['seed'])} seeds ({seeds}).",
        markdown(["model", "sampler", *(f"NFE {b}" for b in budgets)], rows, "ll" + "r" * len(budgets)),
        f"target (the 2-rectified flow with Euler below every DDPM sampler at {', '.join(map(str, FLOW_TARGET_NFE))} "
        f"NFE, a difference shown in each comparison: |Δ| > 2·√(sd_a²/n + sd_b²/n)): {status} ({wins} of "
        f"{len(comparisons)} lower)",
    ]
    if detail:
        parts.append(markdown(["NFE", "DDPM sampler", "DDPM", "2-rectified flow, euler", "call"], comparisons, "rlrr"))
    return "\n\n".join(parts)


# ----- denoising_error: ε-error of kept networks along the log-SNR ----------------------------------------------------


def denoising_error(runs_: Sequence[Record]) -> str:
    """Per run: per grid level λ, each network's ε-MSE (mean ± sd over seeds), the ratios to the lowest mean, and the
    training shares."""
    parts = []
    for r in runs_:
        nets = r["networks"]
        head = [f"{n['network']} ε-MSE (seeds {','.join(map(str, n['seeds']))})" for n in nets]
        rows = []
        for i, lam in enumerate(r["lambda"]):
            low = min(n["mse_mean"][i] for n in nets)
            rows.append([f"{lam:g}", *(f"{n['mse_mean'][i]:.4g} ± {n['mse_sd'][i] or math.nan:.2g}" for n in nets),
                         ", ".join(f"{n['mse_mean'][i] / low:.2f}" for n in nets),
                         *(f"{n['share'][i]:.3f}" for n in nets)])  # fmt: skip
        gap = max(n["lambda_gap"] for n in nets)
        parts.append(markdown(["λ", *head, "ratios to the lowest mean (column order)", *(f"{n['network']} share"
                                                                                         for n in nets)],
                              rows, "r" * (2 * len(nets) + 2))  # fmt: skip
                     + f"\n\nlargest |λ_t − λ| used: {gap:.3f}; training share: fraction of t with |λ_t − λ| ≤ "
                     f"{r['share_width']:g}")  # fmt: skip
    return "\n\n".join(parts)


def denoising_error_ratios(runs_: Sequence[Record]) -> str:
    """The README's view: every network's ε-MSE as a multiple of diffusers' (same run, same CPU) at each λ, then each
    schedule's training share near λ (t uniform: the fraction of indices with |λ_t − λ| ≤ 1)."""
    lam = runs_[0]["lambda"]
    rows: list[list[str]] = []
    shares: dict[str, list[float]] = {}
    for r in runs_:
        for n in r["networks"]:
            seeds = f"seeds {min(n['seeds'])}-{max(n['seeds'])}"
            if n.get("mse_over_diffusers"):
                rows.append([f"{n['network']} / diffusers, {seeds}", *(f"{v:.2f}" for v in n["mse_over_diffusers"])])
            if n.get("share"):
                shares.setdefault(n.get("schedule", n["network"]), n["share"])
    rows += [[f"training share, {name}", *(f"{v:.3f}" for v in share)] for name, share in shares.items()]
    return markdown(["ε-MSE ratio / share", *(f"λ = {v:g}" for v in lam)], rows, "l" + "r" * len(lam))
