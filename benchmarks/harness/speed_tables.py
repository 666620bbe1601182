"""Markdown tables of the speed benchmarks (compare_peers, optimizations, conv_floor, growth, gpu) from their records:
what each script prints after a run, and what the README shows of its latest run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .records import group
from .tables import markdown

Record = dict[str, Any]
PARAM_TOLERANCE = 0.10  # a peer whose parameter count differs from ours by more than this is flagged


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} MiB"


def compare_peers(rows: Sequence[Record], *, with_ratios: bool = True) -> str:
    """One table per configuration (one row per library), then the ratios ours / peer."""
    parts = []
    for (config,), recs in group(rows, ("config",)).items():
        first, ours = recs[0], next((r["params_m"] for r in recs if r["library"] == "ours"), None)
        parts.append(
            f"**{config}**: {first['shape']}, batch {first['batch']}, dim_mults {tuple(first['dim_mults'])}, DDIM "
            f"{first['sample_steps']} steps; (!) marks a parameter count more than {PARAM_TOLERANCE:.0%} away from ours"
        )
        table = []
        for r in recs:
            flag = " (!)" if ours and abs(r["params_m"] / ours - 1) > PARAM_TOLERANCE else ""
            table.append([r["library"], f"{r['params_m']:.2f} M{flag}", f"{r['train_s']:.3f} s",
                          f"{r['train_images_per_s']:.1f}", f"{r['forward_s']:.3f} s", f"{r['sample_s']:.2f} s",
                          _mib(r.get("train_mib")), _mib(r.get("forward_mib")),
                          f"{r['redone']} / {r['unguarded']}"])  # fmt: skip
        headings = ["library", "params", "train step", "images/s (train)", "forward", "DDIM sample",
                    "peak memory, train", "peak memory, forward", "redone / kept under load"]  # fmt: skip
        parts.append(markdown(headings, table))
    if with_ratios and any(r.get("ours_over_peer") for r in rows):
        parts.append(peer_ratios(rows))
    return "\n\n".join(parts)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def peer_ratios(rows: Sequence[Record]) -> str:
    """The ratios ours / peer of every configuration (the peers' ``ours_over_peer``)."""
    keys = ("train_images_per_s", "forward", "sample", "train_memory")
    table = [[r["config"], r["library"], *(_ratio(r["ours_over_peer"].get(k)) for k in keys)]
             for r in rows if r.get("ours_over_peer")]  # fmt: skip
    return "Ratios ours / peer (train images/s: higher is better; times and memory: lower is better)\n\n" + markdown(
        ["config", "ours / peer", "train images/s", "forward time", "DDIM time", "peak train memory"], table
    )


def ratios(ours: Record, peer: Record) -> dict[str, float | None]:
    """ours / peer: training images/s, forward time, DDIM time, peak training memory (None when not measured)."""
    memory = ours.get("train_mib") and peer.get("train_mib") and ours["train_mib"] / peer["train_mib"]
    return {
        "train_images_per_s": peer["train_s"] / ours["train_s"],
        "forward": ours["forward_s"] / peer["forward_s"],
        "sample": ours["sample_s"] / peer["sample_s"],
        "train_memory": memory or None,
    }


def memory(rows: Sequence[Record]) -> str:
    """Peak memory only (compare_peers --memory-only): one row per configuration and library."""
    return markdown(["config", "library", "params", "peak memory, train", "peak memory, forward"],
                    [[r["config"], r["library"], f"{r['params_m']:.2f} M", _mib(r.get("train_mib")),
                      _mib(r.get("forward_mib"))] for r in rows], "llrrr")  # fmt: skip


def optimizations(rows: Sequence[Record]) -> str:
    """One row per variant; the change columns are relative to the first variant of the run."""
    return markdown(
        ["variant", "train step", "images/s", "change", "forward", "change", "peak memory, train", "redone"],
        [[r["variant"], f"{r['train_s']:.3f} s", f"{r['train_images_per_s']:.1f}", f"{r['train_change']:+.1%}",
          f"{r['forward_s']:.3f} s", f"{r['forward_change']:+.1%}", _mib(r.get("memory_mib")), r["redone"]]
         for r in rows],
    )  # fmt: skip


def conv_floor(rows: Sequence[Record]) -> str:
    """The convolutions of one training step timed alone, summed: forward, forward + backward, per layout."""
    r = rows[0]
    flops, train = r["flops_forward"], 3 * r["flops_forward"]
    table = markdown(
        ["convolutions alone", "default layout", "channels_last", "best of the two per layer", "GFLOP/s (default)"],
        [[f"forward ({flops / 1e9:.1f} GFLOP)", f"{r['forward']:.3f} s", f"{r['forward_cl']:.3f} s",
          f"{r['forward_best']:.3f} s", f"{flops / r['forward'] / 1e9:.0f}"],
         [f"forward + backward (~{train / 1e9:.0f} GFLOP)", f"{r['train']:.3f} s", f"{r['train_cl']:.3f} s",
          f"{r['train_best']:.3f} s", f"{train / r['train'] / 1e9:.0f}"]],
    )  # fmt: skip
    return (
        f"{r['config']}, batch {r['batch']}, {r['convolutions']} convolutions per forward\n\n{table}\n\n"
        f"Reference: one 3x3 convolution {tuple(r['reference_shape'])}, forward: {r['reference_gflops']:.0f} GFLOP/s. "
        f"Floor of a training step (convolutions only, each at its own best layout): {r['train_best']:.3f} s = "
        f"{r['batch'] / r['train_best']:.1f} images/s"
    )


def growth(rows: Sequence[Record]) -> str:
    """One row per (image size, batch)."""
    return markdown(
        ["image size", "batch", "train step", "images/s", "GFLOP / step", "GFLOP/s", "peak memory, train",
         "MiB / image", "redone"],
        [[r["size"], r["batch"], f"{r['step_s']:.3f} s", f"{r['images_per_s']:.1f}", f"{r['gflop']:.1f}",
          f"{r['gflop_per_s']:.1f}", _mib(r.get("memory_mib")),
          "-" if r.get("mib_per_image") is None else f"{r['mib_per_image']:.0f}", r["redone"]] for r in rows],
    )  # fmt: skip


def gpu(rows: Sequence[Record]) -> str:
    """One table per configuration: images/s, ratio to ours, share of the measured matmul peak, memory."""
    parts = []
    for (config,), recs in group(rows, ("config",)).items():
        ours = next((r for r in recs if r["library"] == "ours"), None)
        parts.append(f"**{config}**: {recs[0]['shape']}, batch {recs[0]['batch']}")
        parts.append(markdown(
            ["library", "params", "train images/s", "vs ours", "train step", "train share of peak", "forward",
             "forward share of peak", "DDIM sample", "peak memory, train"],
            [[r["library"], f"{r['params_m']:.2f} M", f"{r['batch'] / r['step_s']:.1f}",
              f"{r['step_s'] / ours['step_s']:.2f}" if ours else "-", f"{r['step_s'] * 1e3:.1f} ms",
              f"{r['train_flops'] / r['step_s'] / r['peak_flops']:.1%}", f"{r['forward_s'] * 1e3:.2f} ms",
              f"{r['forward_flops'] / r['forward_s'] / r['peak_flops']:.1%}", f"{r['sample_s']:.2f} s",
              _mib(r.get("memory_mib"))] for r in recs],
        ))  # fmt: skip
    return "\n\n".join(parts)


def latent(rows: Sequence[Record]) -> str:
    """benchmarks/latent.py: training and sampling of each variant against pixel space, per size; the target's
    verdict (64x64, f = 4, cached latents: >= 4x images/s and >= 4x faster sampling); the autoencoders' PSNR."""
    speed = [r for r in rows if r["kind"] == "speed"]
    first = speed[0]
    parts = [f"Unet(dim={first['dim']}, dim_mults={tuple(first['dim_mults'])}), batch {first['batch']}, "
             f"Autoencoder(dim={first['ae_dim']}), DDIM {first['sample_steps']} steps; x pixel: ratio to pixel "
             "training's images/s, and pixel sampling's time per image to this one's"]  # fmt: skip
    parts.append(markdown(
        ["size", "variant", "trains on", "train images/s", "x pixel", "peak memory, train", "sample s / image",
         "x pixel", "redone / kept under load"],
        [[f"{r['size']}x{r['size']}", r["variant"], "x".join(map(str, r["shape"])), f"{r['images_per_s']:.2f}",
          f"{r['train_vs_pixel']:.1f}", _mib(r.get("memory_mib")), f"{r['sample_s_per_image']:.3f}",
          f"{r['sample_vs_pixel']:.1f}", f"{r['redone']} / {r['unguarded']}"] for r in speed],
    ))  # fmt: skip
    target = next((r for r in speed if r["size"] == 64 and r["variant"] == "f4 cached"), None)
    if target is not None:
        met = target["train_vs_pixel"] >= 4 and target["sample_vs_pixel"] >= 4
        parts.append(f"Target at 64x64, f = 4, cached latents (>= 4x training images/s and >= 4x faster sampling): "
                     f"{'met' if met else 'not met'} ({target['train_vs_pixel']:.1f}x training, "
                     f"{target['sample_vs_pixel']:.1f}x sampling).")  # fmt: skip
    psnr = [r for r in rows if r["kind"] == "psnr"]
    if psnr:
        parts.append(markdown(
            ["autoencoder", "images", "training steps", "seeds", "reconstruction PSNR (mean, spread)"],
            [[f"f = {r['factor']}", f"{r['size']}x{r['size']} shapes", r["steps"], len(r["seeds"]),
              f"{r['psnr_mean']:.1f} dB (± {r['psnr_spread'] / 2:.1f})"] for r in psnr],
        ))  # fmt: skip
    return "\n\n".join(parts)
