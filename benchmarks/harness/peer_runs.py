"""What a run of the peer benchmark (peer_quality.py) is made of and leaves behind, which its diagnostics
(denoising_error.py, sampler_variants.py) read: the data sets, the feature classifier, the x_T protocol, and the
networks kept with ``--keep-weights``.

Data: ``digits`` (the 8x8 digits split of digits.py: 1297 training and 500 held-out images) and ``shapes`` (the
built-in discs and squares, 3x32x32, 4096 training images from seed 0 and 1000 held-out from seed 1; 8 classes for
the feature classifier). Networks: dim 32, dim_mults (1, 2). A budget of ``--minutes M`` is 120·M process
CPU-seconds (M minutes of 2 cores).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from denoising_diffusion.data import BuiltinShapes
from denoising_diffusion.evaluation import SmallImageClassifier, train_classifier

from . import contenders
from .digits import load_split
from .recipes import RECIPES
from .records import cpu_model, cpu_of

CPU_SECONDS_PER_MINUTE = 120.0  # a minute of 2 cores
DEFAULT_CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "denoising_diffusion_bench"  # the feature classifiers
WEIGHTS_NAME = "{data}-{library}-{recipe}-seed{seed}-{budget:g}s-{device}{precision}.pt"  # a kept network's file

# Where a run's initial noise x_T came from (its ``x_T`` field). "shared": every library starts each draw from the
# same x_T (the first draw of the generator seeded SAMPLE_SEED + draw). Before 2026-11-30 23:45 UTC
# denoising-diffusion-pytorch drew its x_T from a global seed derived from that generator, so its records without
# the field are "own": a different fixed x_T set, whose luck was shared by all its runs and so invisible in the seed
# spread (docs/benchmark-history.md). "per_seed" (the default from 2026-12-01): training seed s draws its x_T sets
# from SAMPLE_SEED + SEED_STRIDE·(s + 1) + draw, still the same for every library, so which sets were drawn varies
# with the seed and shows in the seed spread.
SHARED_NOISE, OWN_NOISE, PER_SEED_NOISE = "shared", "own", "per_seed"
SAMPLE_SEED, SEED_STRIDE = 10_000, 1_000


def noise_of(record: dict[str, Any]) -> str:
    """The record's x_T protocol: its ``x_T`` field, else "own" for denoising-diffusion-pytorch's old records (ours and
    diffusers always drew x_T from the generator itself, the shared draw)."""
    return record.get("x_T") or (OWN_NOISE if record["library"] == contenders.LUCIDRAINS else SHARED_NOISE)


def x_t_seed(seed: int, draw: int, noise: str) -> int:
    """The seed of the generator draw ``draw`` of training seed ``seed`` samples from (its x_T and any sampling
    noise) under the x_T protocol ``noise``; it never depends on the library, so comparisons are paired."""
    if noise == PER_SEED_NOISE:
        return SAMPLE_SEED + SEED_STRIDE * (seed + 1) + draw
    return SAMPLE_SEED + draw


# The DDIM variant each library samples with (sampler_variants.py): its records are that variant of their network.
OWN_DDIM = {contenders.OURS: "rederive/linspace", contenders.DIFFUSERS: "x0/leading",
            contenders.LUCIDRAINS: "rederive/trailing"}  # fmt: skip
NETWORK_FIELDS = ("data", "library", "recipe", "seed", "budget_cpu_s", "sample_steps", "num_samples", "draws")


def own_ddim_record(peer_records: list[dict[str, Any]], network: dict[str, Any]) -> dict[str, Any] | None:
    """The peer_quality record of a kept ``network`` (its NETWORK_FIELDS, ``x_T`` protocol and the ``cpu`` it trained
    on) as the variant of its own library's DDIM, which it is (the same x_T sets and sampler); None without one."""
    wanted = {**{k: network[k] for k in NETWORK_FIELDS}, "device": "cpu"}
    for r in peer_records:
        if (all(r.get(k) == v for k, v in wanted.items()) and noise_of(r) == network["x_T"]
                and cpu_of(r) == cpu_of(network) and not r.get("bf16")):  # fmt: skip
            return {**wanted, "variant": OWN_DDIM[network["library"]], "x_T": network["x_T"], "cpu": cpu_of(network),
                    "fd": r["fd"], "source": "peer_quality"}  # fmt: skip
    return None


@dataclass
class Dataset:
    """Training images, held-out images (both (N, C, H, W) in [0, 1]) and the training labels."""

    train: Tensor
    train_labels: Tensor
    heldout: Tensor

    @property
    def size(self) -> contenders.NetworkSize:
        return contenders.NetworkSize(32, (1, 2), self.train.shape[1], self.train.shape[-1])


def load_data(name: str, *, quick: bool = False) -> Dataset:
    """The benchmark's data sets (module docstring); ``quick``: a few images, for the test suite."""
    if name == "digits":
        train_x, train_y, held_x, _ = load_split(0)
        data = Dataset(train_x, train_y, held_x)
    elif name == "shapes":
        train = BuiltinShapes(512 if quick else 4096, image_size=32, channels=3, seed=0)
        held = BuiltinShapes(128 if quick else 1000, image_size=32, channels=3, seed=1)
        data = Dataset(train.images, train.labels, held.images)
    else:
        raise ValueError(f"unknown data set {name!r}; known: digits, shapes")
    if quick:
        data = Dataset(data.train[:256], data.train_labels[:256], data.heldout[:128])
    return data


def feature_classifier(name: str, data: Dataset, cache: Path, *, quick: bool) -> SmallImageClassifier:
    """The data set's feature extractor, trained once (seed 0) and cached under ``cache``."""
    steps = 20 if quick else 1500
    path = cache / f"peer-quality-{name}-classifier-{steps}{'-quick' if quick else ''}.pt"
    classes = int(data.train_labels.max()) + 1
    if path.exists():
        net = SmallImageClassifier(data.train.shape[1], data.train.shape[-1], classes)
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval()
    net = train_classifier(data.train, data.train_labels, steps=steps, seed=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return net


def weights_name(data: str, library: str, recipe: str, seed: Any, budget: float, device: str, bf16: bool) -> str:
    """The file name of a kept network (its training figures beside it, ``.json``)."""
    return WEIGHTS_NAME.format(data=data, library=library, recipe=recipe, seed=seed, budget=budget, device=device,
                               precision="-bf16" if bf16 else "")  # fmt: skip


def kept_path(folder: Path, data: str, library: str, recipe: str, seed: int, budget: float, device: str,
              bf16: bool) -> Path:  # fmt: skip
    """Where ``--keep-weights`` keeps a run's EMA state dict (its training figures beside it, ``.json``): one file per
    trained network, so a later invocation with more ``--draws``, another ``--num-samples`` or ``--sample-steps``
    samples the same network instead of retraining it."""
    return folder / weights_name(data, library, recipe, seed, budget, device, bf16)


def kept_elsewhere(path: Path, device: str) -> str | None:
    """Why the network kept at ``path`` may not stand for a run on this machine, or None: a network kept from a CPU
    budget on another CPU had that CPU's number of steps."""
    if device != "cpu" or not path.with_suffix(".json").exists():
        return None
    kept_on, here = trained_on(path), cpu_model()
    if kept_on == here:
        return None
    return (f"--keep-weights: {path} was trained on {kept_on}, and this machine's CPU is {here}; a CPU-second "
            "budget buys each CPU its own steps, so keep this machine's networks in another folder")  # fmt: skip


def trained_on(path: Path) -> str:
    """The CPU a kept network (``path``, its .pt) trained on, from the figures beside it; figures without ``cpu``
    are the first Xeon's (records.LEGACY_CPU)."""
    figures = path.with_suffix(".json")
    return cpu_of(json.loads(figures.read_text()) if figures.exists() else {})


def kept_networks(weights: Path, data: str, library: str, recipe: str, budget: float) -> dict[int, Path]:
    """{seed: path} of the kept CPU float32 networks of one library and recipe in the folder ``weights``."""
    prefix, suffix = weights_name(data, library, recipe, "\0", budget, "cpu", False).split("\0")
    found = {}
    for path in sorted(weights.glob(f"{prefix}*{suffix}")):
        match = re.fullmatch(re.escape(prefix) + r"(\d+)" + re.escape(suffix), path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def load_kept(library: str, recipe: str, data: Dataset, path: Path, sample_steps: int,
              device: str = "cpu") -> tuple[contenders.Contender, nn.Module]:  # fmt: skip
    """A freshly built contender (sampling at ``sample_steps``) and its averaged network, the weights kept at
    ``path`` loaded into it."""
    contender = contenders.build(library, data.size, RECIPES[recipe] if library == contenders.OURS else {},
                                 sample_steps)  # fmt: skip
    contender.ema_target.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return contender, contender.ema_target.to(device).eval()
