"""The cascade benchmark's tables (benchmarks/cascade.py), from its record: what the script prints is what the
README shows (benchmarks/report.py)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .stats import mean_sd
from .tables import markdown, pm


def _pm(values: Sequence[float], digits: int = 2) -> str:
    mean, sd = mean_sd(list(values))
    return pm(mean, sd, digits) if len(values) > 1 else f"{mean:.{digits}f}"


def _call(paired: dict[str, Any], digits: int = 2) -> str:
    return f"{paired['diff']:+.{digits}f} ± {paired['se']:.{digits}f} ({paired['call']})"


def cascade(recs: Sequence[dict[str, Any]]) -> str:
    """Three tables of the latest record: the stage against bicubic, the cascade against the single model at equal
    training CPU, and the augmentation level at sampling. Values are mean ± sd over seeds; differences are paired per
    seed, mean ± standard error, with the rule's call."""
    r = recs[-1]
    cfg, seeds, fd = r["config"], r["seeds"], r["fd"]
    default = min(cfg["levels"], key=lambda s: abs(s - 0.1))
    head = (f"{len(seeds)} training seeds {seeds}; N = {cfg['num_samples']} per set; measuring classifier's held-out "
            f"accuracy {r['accuracy']:.3f}; real-vs-real floor {r['floor'][0]:.2f} ± {r['floor'][1]:.2f}; the whole "
            f"run {r['cpu_s'] / 60:.0f} CPU min ({r['wall_s'] / 60:.0f} min wall)")  # fmt: skip
    if r.get("machine_note"):
        head += f"; {r['machine_note']}"
    stage = markdown(
        ["16x16 -> 32x32 (held-out inputs)", "PSNR (dB)", "FD"],
        [["bicubic upsampling", f"{r['psnr_bicubic']:.2f}", f"{r['fd_bicubic']:.2f}"],
         [f"the stage (level {default:g})", _pm(r["psnr_stage"]), _pm(fd["stage"])],
         ["stage − bicubic (paired)", _call(r["psnr_vs_bicubic"]), _call(r["stage_vs_bicubic"])]],
        "lrr",
    )  # fmt: skip
    train = r["train_cpu_s"]
    cascade_cpu = [t["base"] + t["stage"] for t in train.values()]
    single_cpu = [t["single"] for t in train.values()]
    versus = markdown(
        ["32x32 model", "training CPU s", "training steps", "FD", "sampling CPU s / sample"],
        [[f"cascade: base 16x16 + stage (level {default:g})", _pm(cascade_cpu, 0),
          f"{cfg['base_steps']} + {cfg['stage_steps']}", _pm(fd[f"cascade@{default:g}"]), _pm(r["cost_cascade"], 3)],
         ["one 32x32 model, same CPU time", _pm(single_cpu, 0),
          f"{statistics.fmean(r['single_steps'].values()):.0f}", _pm(fd["single"]), _pm(r["cost_single"], 3)],
         ["cascade − single (paired)", "", "", _call(r["cascade_vs_single"]), ""]],
        "lrrrr",
    )  # fmt: skip
    levels = markdown(
        ["augmentation level at sampling", "cascade FD", "FD − FD at level 0 (paired)"],
        [[f"{s:g}", _pm(fd[f"cascade@{s:g}"]), _call(r["levels_vs_0"][f"{s:g}"]) if s else ""] for s in cfg["levels"]],
        "rrr",
    )
    return f"{head}\n\n{stage}\n\n{versus}\n\n{levels}"
