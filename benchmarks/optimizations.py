"""Each speed change of issue 5 measured against its alternative, in one run: train step, forward, peak memory.

Usage:  python benchmarks/optimizations.py [--config 3x32] [--repeats 7] [--variants a,b,...] [--compile]
                                           [--results FILE]
        python benchmarks/optimizations.py --quick       # seconds-long smoke run (what the test suite runs)

Variants of this project's default network (``Unet(64, dim_mults=(1, 2, 4, 8))`` at harness/subjects.py's configs):

* ``before``: the network and optimizer as they were before issue 5: attention that transposes q, k, v to
  (B, heads, H·W, d) (a copy of the whole qkv tensor at every attention layer) and Adam's per-tensor kernel;
* ``attention``: attention computed in the (B, heads, d, H·W) layout of the 1×1 conv's output (no transposing
  copy), still the per-tensor Adam;
* ``defaults``: the library as shipped: that attention and the fused Adam kernel (``speed.make_adam``);
* ``channels_last``: the defaults with network and batch in channels_last memory format;
* ``bf16``: the defaults under CPU bf16 autocast (what ``Trainer(amp=True)`` does on the CPU);
* ``recompute``: the defaults with each ResNet block's GroupNorm + SiLU recomputed in the backward pass
  (``torch.utils.checkpoint``): less memory, more time;
* ``compile`` (only with ``--compile``; minutes of compilation first): the defaults compiled as
  ``Trainer(compile=True)`` does (``speed.compile_network``: inductor, on the CPU without its layout optimization);
* ``compile_layout`` (only with ``--compile``): ``torch.compile`` with its own defaults (inductor's layout
  optimization on, which turns the convolutions to channels_last).

The variants are timed in turn, iteration by iteration (``harness.timing.alternating_medians``: guarded, warm-up not
timed, medians); peak memory is the median over 3 child processes per variant (VmHWM growth over two steps). Each
variant's figures are appended to benchmarks/results/optimizations.jsonl (``--results``; a ``--quick`` run records
only when given a file).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import types
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from benchmarks.harness import records, speed_tables
from benchmarks.harness.subjects import CONFIGS, QUICK, Config, build_ours
from benchmarks.harness.timing import alternating_medians, machine_line, max_rss_mib, run_child
from denoising_diffusion.nn import Attention, LinearAttention, ResnetBlock
from denoising_diffusion.training import compile_network

VARIANTS = ("before", "attention", "defaults", "channels_last", "bf16", "recompute", "compile", "compile_layout")
COMPILED = ("compile", "compile_layout")


def _transposing_qkv(layer: Any, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The pre-issue-5 layout: q, k, v moved to (B, heads, H·W, d), which copies the whole qkv tensor."""
    qkv = layer.to_qkv(layer.norm(x))
    b, _, h, w = qkv.shape
    qkv = qkv.reshape(b, 3, layer.heads, -1, h * w).permute(1, 0, 2, 4, 3).contiguous()
    return qkv.unbind(0)


def _transposing_out(layer: Any, x: Tensor, out: Tensor) -> Tensor:
    b, _, h, w = x.shape
    return x + layer.to_out(out.permute(0, 1, 3, 2).reshape(b, -1, h, w))


def _transposing_linear_forward(self: LinearAttention, x: Tensor) -> Tensor:
    q, k, v = _transposing_qkv(self, x)
    context = k.softmax(dim=-2).transpose(-1, -2) @ v
    return _transposing_out(self, x, q.softmax(dim=-1) @ context)


def _transposing_full_forward(self: Attention, x: Tensor) -> Tensor:
    q, k, v = _transposing_qkv(self, x)
    return _transposing_out(self, x, F.scaled_dot_product_attention(q, k, v))


def _recomputing_resnet_forward(self: ResnetBlock, x: Tensor, time_emb: Tensor) -> Tensor:
    """ResnetBlock.forward with norm + SiLU under torch.utils.checkpoint (their outputs are not kept)."""

    def norm_silu(norm: torch.nn.Module, h: Tensor, scale: Tensor | None = None, shift: Tensor | None = None):
        h = norm(h)
        return F.silu(h if scale is None else h * (1 + scale) + shift)

    h = self.conv_1(checkpoint(norm_silu, self.norm_1, x, use_reentrant=False))
    scale, shift = self.time_mlp(time_emb)[:, :, None, None].chunk(2, dim=1)
    h = self.conv_2(self.dropout(checkpoint(norm_silu, self.norm_2, h, scale, shift, use_reentrant=False)))
    return h + self.skip(x)


def build_variant(name: str, config: Config) -> tuple[Callable[[], None], Callable[[], None]]:
    """(train step, forward) of ``name``: see the module docstring."""
    torch.manual_seed(0)
    subject = build_ours(config, channels_last=name == "channels_last")
    if name == "before":
        for module in subject.network.modules():
            if isinstance(module, LinearAttention):
                module.forward = types.MethodType(_transposing_linear_forward, module)
            elif isinstance(module, Attention):
                module.forward = types.MethodType(_transposing_full_forward, module)
    if name == "recompute":
        for module in subject.network.modules():
            if isinstance(module, ResnetBlock):
                module.forward = types.MethodType(_recomputing_resnet_forward, module)
    if name == "compile":
        compile_network(subject.network)  # as Trainer(compile=True) does
    if name == "compile_layout":
        subject.network.compile()  # torch.compile's own defaults (inductor with its layout optimization)
    params = list(subject.network.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-4) if name in ("before", "attention") else subject.optimizer(params)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16")

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = subject.loss()
        loss.backward()
        optimizer.step()

    def forward() -> None:
        with torch.inference_mode(), autocast:
            subject.forward()

    return train, forward


def memory_child(payload: dict[str, Any]) -> float:
    """Peak extra resident memory (MiB) of two training steps of one variant; run by ``run_child``."""
    train, _ = build_variant(payload["variant"], Config.from_dict(payload["config"]))
    base = max_rss_mib()
    train()
    train()
    return max_rss_mib() - base


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Measure the chosen variants and print a markdown table; returns {variant: its record (train_s, forward_s,
    memory_mib, ...)}."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="3x32", choices=sorted(CONFIGS))
    p.add_argument(
        "--variants",
        default=",".join(v for v in VARIANTS if v not in COMPILED),
        help=f"comma-separated, from {', '.join(VARIANTS)}",
    )
    p.add_argument("--compile", action="store_true", help="add the torch.compile variants (minutes to compile)")
    p.add_argument("--repeats", type=int, default=7, help="timed iterations per variant")
    p.add_argument("--memory-runs", type=int, default=3, help="child processes per variant for peak memory (0: none)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    p.add_argument("--results", type=Path, default=None, help="the results file (default: benchmarks/results/)")
    args = p.parse_args(argv)
    names = args.variants.split(",")
    names += [v for v in COMPILED if args.compile and v not in names]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    config, repeats, memory_runs = (
        (QUICK, 1, min(args.memory_runs, 1)) if args.quick else (CONFIGS[args.config], args.repeats, args.memory_runs)
    )
    threads = torch.get_num_threads()
    print(f"Measured on {machine_line()}; {config.name}, batch {config.batch}")
    built = {name: build_variant(name, config) for name in names}
    train = alternating_medians({n: fns[0] for n, fns in built.items()}, repeats, threads)
    forward = alternating_medians({n: fns[1] for n, fns in built.items()}, repeats, threads)
    header = records.header("optimizations", argv, seed=0, config=config.name, batch=config.batch, threads=threads)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        runs = [
            run_child("benchmarks.optimizations", "memory_child", {"config": asdict(config), "variant": name}, threads)
            for _ in range(memory_runs)
        ]
        results[name] = {
            **header,
            "variant": name,
            "train_s": train[name].median_s,
            "train_images_per_s": config.batch / train[name].median_s,
            "forward_s": forward[name].median_s,
            "memory_mib": statistics.median(runs) if runs else None,
            "redone": train[name].redone + forward[name].redone,
        }
    first = next(iter(results.values()))
    for r in results.values():  # the change against the first variant, as the table shows it
        r["train_change"], r["forward_change"] = (
            r["train_s"] / first["train_s"] - 1,
            r["forward_s"] / first["forward_s"] - 1,
        )
    print(speed_tables.optimizations(list(results.values())))
    records.append(records.destination(args.results, "optimizations", quick=args.quick), *results.values())
    return results


if __name__ == "__main__":
    main()
