"""The convolution floor of a training step: every convolution of the network timed alone, summed.

Usage:  python benchmarks/conv_floor.py [--config 3x32] [--repeats 5] [--threads N] [--results FILE]
        python benchmarks/conv_floor.py --quick      # seconds-long smoke run (what the test suite runs)

A forward pass of the default network (at a configuration of harness/subjects.py) is run once with hooks that record
the input shape of every ``nn.Conv2d`` call. Each call is then timed alone on fresh tensors of that shape: forward, and
forward + backward (gradients for the input and the weights, as in training; the first convolution gets no input
gradient, as its input is data), in the default memory layout and in channels_last. The sums are what the
convolutions of one training step cost when each runs at its own best speed, with nothing else in between:
a floor for the step time that no change outside the convolutions can go below. The script also times one large
3x3 convolution (batch 16, 256 -> 256 channels at 32x32) as the machine's reference convolution rate. The sums are
appended to benchmarks/results/conv_floor.jsonl (``--results``; a ``--quick`` run records only when given a file).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from benchmarks.harness import records, speed_tables
from benchmarks.harness.subjects import CONFIGS, QUICK, Config
from benchmarks.harness.timing import machine_line
from denoising_diffusion import Unet


@dataclass
class ConvCall:
    """One convolution of the forward pass: the layer, its input shape, and its forward FLOPs (2 per MAC)."""

    conv: nn.Conv2d
    shape: tuple[int, ...]
    needs_input_grad: bool

    @property
    def flops(self) -> float:
        n, c, h, w = self.shape
        kh, kw = self.conv.kernel_size
        out_hw = (h // self.conv.stride[0]) * (w // self.conv.stride[1])
        return 2.0 * n * self.conv.out_channels * out_hw * c * kh * kw / self.conv.groups


def record_convs(config: Config) -> list[ConvCall]:
    """Every Conv2d call of one forward pass of the config's Unet, in order."""
    torch.manual_seed(0)
    net = Unet(config.dim, dim_mults=config.dim_mults, channels=config.channels)
    calls: list[ConvCall] = []
    hooks = [
        m.register_forward_hook(
            lambda m, inp, out: calls.append(ConvCall(m, tuple(inp[0].shape), needs_input_grad=m is not net.init_conv))
        )
        for m in net.modules()
        if isinstance(m, nn.Conv2d)
    ]
    shape = (config.batch, config.channels, config.image_size, config.image_size)
    with torch.no_grad():
        net(torch.randn(shape), torch.full((config.batch,), 500))
    for hook in hooks:
        hook.remove()
    return calls


def time_conv(
    conv: nn.Conv2d,
    shape: tuple[int, ...],
    backward: bool,
    channels_last: bool,
    input_grad: bool = True,
    repeats: int = 5,
) -> float:
    """Median seconds of conv(x) (and its backward, for the weights and, if ``input_grad``, the input)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    layer = conv.to(memory_format=fmt)
    x = torch.randn(shape).contiguous(memory_format=fmt).requires_grad_(backward and input_grad)
    times = []
    for _ in range(repeats + 2):  # two warm-up calls
        start = time.perf_counter()
        if backward:
            y = layer(x)
            y.backward(torch.ones_like(y))
        else:
            with torch.no_grad():
                layer(x)
        times.append(time.perf_counter() - start)
    layer.to(memory_format=torch.contiguous_format)
    layer.zero_grad(set_to_none=True)
    return statistics.median(times[2:])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Print the sums and the implied floor; returns the record."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="3x32", choices=sorted(CONFIGS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--results", type=Path, default=None, help="the results file (default: benchmarks/results/)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = QUICK if args.quick else CONFIGS[args.config]
    repeats = 1 if args.quick else args.repeats
    calls = record_convs(config)
    per_call = {
        key: [time_conv(c.conv, c.shape, backward, cl, c.needs_input_grad, repeats) for c in calls]
        for key, backward, cl in (
            ("forward", False, False),
            ("forward_cl", False, True),
            ("train", True, False),
            ("train_cl", True, True),
        )
    }
    big = (config.batch, 256 if not args.quick else 16, 32 if not args.quick else 8, 32 if not args.quick else 8)
    reference = nn.Conv2d(big[1], big[1], 3, padding=1)
    ref_s = time_conv(reference, big, backward=False, channels_last=False, repeats=repeats)
    record = {
        **records.header("conv_floor", argv, seed=0), "config": config.name, "batch": config.batch,
        "threads": torch.get_num_threads(), "convolutions": len(calls), "flops_forward": sum(c.flops for c in calls),
        **{key: sum(t) for key, t in per_call.items()},
        "train_best": sum(min(a, b) for a, b in zip(per_call["train"], per_call["train_cl"])),
        "forward_best": sum(min(a, b) for a, b in zip(per_call["forward"], per_call["forward_cl"])),
        "reference_shape": list(big), "reference_gflops": ConvCall(reference, big, True).flops / ref_s / 1e9,
    }  # fmt: skip
    print(f"Measured on {machine_line()}\n\n{speed_tables.conv_floor([record])}")
    records.append(records.destination(args.results, "conv_floor", quick=args.quick), record)
    return record


if __name__ == "__main__":
    main()
