"""DDIM variants on the networks peer_quality.py kept (``--keep-weights``): is a library's lead in its network or in
its sampler?

Every kept network is an ε-predictor (or is converted to one: ``Contender.predict_eps``) on its library's discrete
1000-step ᾱ table, so any DDIM (Song et al. 2021, eq. 12, η = 0) can sample any of them. A *variant* is one DDIM,
named ``CLIP/SPACING``. CLIP is what happens to x̂_0 = (x_t − σ_t ε̂)/α_t at each step: ``rederive`` clamps x̂_0 to
[−1, 1] and recomputes ε̂ from it (ours' and denoising-diffusion-pytorch's DDIM, GLIDE's convention); ``x0`` clamps
x̂_0 but keeps the network's ε̂ for the direction term (diffusers' ``DDIMScheduler``: ``clip_sample=True``,
``use_clipped_model_output=False``); ``none`` clamps nothing. SPACING is which indices the steps visit: ``linspace``
(ours: round(linspace(T − 1, 0, steps))), ``leading`` (diffusers': 980, 960, …, 0 for 50 steps), ``trailing``. The
last step goes to ᾱ = 1 (diffusers' ``set_alpha_to_one``). ``ours`` names ``rederive/linspace``, ``diffusers``
``x0/leading``: the tests check they reproduce GaussianDiffusion.sample(sampler='ddim') and diffusers' own loop.

Each (network, seed, variant) is sampled exactly as peer_quality.py sampled the network's record (the same x_T sets,
harness/peer_runs.x_t_seed; ``--draws`` sets of ``--num-samples``; the same features), so the network's own variant
reproduces its record and any other is a paired comparison. Every result is a line of ``--results``; a rerun skips
what is there.

Usage:  python benchmarks/sampler_variants.py --weights DIR --networks diffusers ours/eps_linear \\
            --variants ours diffusers x0/linspace [--seeds 2 3 4] [--minutes 16] [--draws 4] [--num-samples 1000]
        python benchmarks/sampler_variants.py --report --networks ... --variants ...   (the table from the files)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")  # lucidrains' sampler draws a progress bar; tqdm reads this at import

import torch
from torch import Tensor, nn

from benchmarks.harness import contenders as libs
from benchmarks.harness import peer_runs, records, tables
from benchmarks.harness.recipes import RECIPES
from denoising_diffusion import NoiseSchedule, Prediction, sample_ddim
from denoising_diffusion.evaluation import feature_reference, frechet_distance_to
from denoising_diffusion.processes import Spacing

CLIPS = ("rederive", "x0", "none")
NAMED = peer_runs.OWN_DDIM
DEFAULT_RESULTS, PEER_RESULTS = records.RESULTS / "sampler_variants.jsonl", records.RESULTS / "peer_quality.jsonl"


def parse_variant(name: str) -> tuple[str, Spacing]:
    """``CLIP/SPACING`` or a library's name (NAMED) -> (clip, spacing). Raises ValueError naming the allowed
    values."""
    clip, _, spacing = NAMED.get(name, name).partition("/")
    if clip not in CLIPS or spacing not in {s.value for s in Spacing}:
        raise ValueError(
            f"variant {name!r}: expected CLIP/SPACING with CLIP in {', '.join(CLIPS)} and SPACING in "
            f"{', '.join(s.value for s in Spacing)}, or one of {', '.join(NAMED)}"
        )
    return clip, Spacing(spacing)


def schedule_of(alphas_cumprod: Tensor) -> NoiseSchedule:
    """The discrete schedule with this ᾱ table (T,): β_t = 1 − ᾱ_t/ᾱ_{t−1}, ᾱ_{−1} = 1."""
    ab = alphas_cumprod.double()
    return NoiseSchedule(1 - ab / torch.cat([ab.new_ones(1), ab[:-1]]))


def eps_denoiser(
    predict_eps: Callable[[Tensor, Tensor], Tensor], schedule: NoiseSchedule, clip: str
) -> Callable[[Tensor, Tensor], Prediction]:
    """(x_t, t) -> Prediction from an ε-predictor on ``schedule``, with x̂_0 treated as ``clip`` says (module
    docstring). x_t: (B, C, H, W); t: (B,) int64 indices."""

    def denoise(x_t: Tensor, t: Tensor) -> Prediction:
        eps = predict_eps(x_t, t).to(x_t.dtype)
        alpha, sigma = (c.to(x_t.dtype).view(-1, 1, 1, 1) for c in schedule.alpha_sigma_at(t))
        x0 = (x_t - sigma * eps) / alpha
        if clip == "none":
            return Prediction(x0=x0, eps=eps)
        x0 = x0.clamp(-1.0, 1.0)
        return Prediction(x0=x0, eps=(x_t - alpha * x0) / sigma if clip == "rederive" else eps)

    return denoise


def sample(contender: libs.Contender, network: nn.Module, variant: str, x_T: Tensor, steps: int) -> Tensor:
    """DDIM (η = 0) of ``variant`` from x_T (B, C, H, W) in ``steps`` steps; images in [0, 1]."""
    if contender.alphas_cumprod is None:
        raise ValueError("DDIM variants are defined here for discrete schedules only (a continuous recipe?)")
    clip, spacing = parse_variant(variant)
    schedule = schedule_of(contender.alphas_cumprod)
    denoiser = eps_denoiser(lambda x, t: contender.predict_eps(network, x, t), schedule, clip)
    with torch.inference_mode():
        x = sample_ddim(denoiser, x_T, schedule, schedule.timesteps(steps, spacing))
    return ((x + 1) / 2).clamp(0, 1)


def distances(contender: libs.Contender, network: nn.Module, variant: str, seed: int, args: argparse.Namespace,
              shape: tuple[int, ...], reference: Any) -> list[float]:  # fmt: skip
    """FD of each draw, from the x_T sets peer_quality gave this training seed's record."""
    out = []
    for draw in range(args.draws):
        gen = torch.Generator().manual_seed(peer_runs.x_t_seed(seed, draw, args.noise))
        x_T = torch.randn((args.num_samples, *shape), generator=gen)
        out.append(frechet_distance_to(reference, sample(contender, network, variant, x_T, args.sample_steps)))
    return out


def record_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """A network is (data, library, recipe, seed, budget, CPU it trained on: peer_quality's run key), then the
    sampling."""
    return (*(record[k] for k in ("data", "library", "recipe", "seed", "budget_cpu_s", "variant", "sample_steps",
                                  "num_samples", "draws", "x_T")), records.cpu_of(record))  # fmt: skip


def own_record(args: argparse.Namespace, library: str, recipe: str, seed: int, budget: float,
               cpu: str) -> list[dict[str, Any]]:  # fmt: skip
    """The network's peer_quality record (in ``args.peer_results``, trained on ``cpu``) as its own library's DDIM
    variant (peer_runs.own_ddim_record); [] when there is none."""
    network = {"data": args.data, "library": library, "recipe": recipe, "seed": seed, "budget_cpu_s": budget,
               "sample_steps": args.sample_steps, "num_samples": args.num_samples, "draws": args.draws,
               "x_T": args.noise, "cpu": cpu}  # fmt: skip
    own = peer_runs.own_ddim_record(records.load(args.peer_results), network)
    return [] if own is None else [own]


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Sample every (network, seed, variant) not yet in ``args.results``; returns all matching records."""
    data = peer_runs.load_data(args.data, quick=args.quick)
    classifier = peer_runs.feature_classifier(args.data, data, args.cache, quick=args.quick)
    reference = feature_reference(classifier, data.heldout)
    budget = args.minutes * peer_runs.CPU_SECONDS_PER_MINUTE
    done = {record_key(r): r for r in records.load(args.results)}
    found = []
    for library, recipe in args.networks:
        kept = peer_runs.kept_networks(args.weights, args.data, library, recipe, budget)
        for seed in sorted(s for s in kept if args.seeds is None or s in args.seeds):
            contender, network = peer_runs.load_kept(library, recipe, data, kept[seed], args.sample_steps)
            own, cpu = NAMED[library], peer_runs.trained_on(kept[seed])
            if own not in {NAMED.get(v, v) for v in args.variants}:  # the benchmark's record is that variant
                found += own_record(args, library, recipe, seed, budget, cpu)
            for variant in args.variants:
                record = {"data": args.data, "library": library, "recipe": recipe, "seed": seed,
                          "budget_cpu_s": budget, "variant": NAMED.get(variant, variant),
                          "sample_steps": args.sample_steps, "num_samples": args.num_samples, "draws": args.draws,
                          "x_T": args.noise, "cpu": cpu}  # fmt: skip
                if record_key(record) not in done:
                    fd = distances(contender, network, record["variant"], seed, args, tuple(data.train.shape[1:]),
                                   reference)  # fmt: skip
                    done[record_key(record)] = record = {**record, "fd": fd, **records.header(
                        "sampler_variants", None, command=args.command, seed=seed, cpu=cpu)}  # fmt: skip
                    records.append(args.results, record)
                    print(f"{library}/{recipe} seed {seed} {record['variant']}: fd {[round(d, 3) for d in fd]}",
                          flush=True)  # fmt: skip
                found.append(done[record_key(record)])
    return found


def recorded(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``--report``: the records of ``args.results`` (and each network's own record from ``args.peer_results``)
    that match the arguments, without the kept networks — what ``measure`` returns once everything is sampled."""
    budget = args.minutes * peer_runs.CPU_SECONDS_PER_MINUTE
    variants = {NAMED.get(v, v) for v in args.variants}
    wanted = {"data": args.data, "budget_cpu_s": budget, "sample_steps": args.sample_steps,
              "num_samples": args.num_samples, "draws": args.draws, "x_T": args.noise}  # fmt: skip
    found, recorded_ = [], records.load(args.results)
    for library, recipe in args.networks:
        mine = [r for r in recorded_
                if r["library"] == library and r["recipe"] == recipe and r["variant"] in variants
                and all(r.get(k) == v for k, v in wanted.items())
                and (args.seeds is None or r["seed"] in args.seeds)]  # fmt: skip
        own = NAMED[library]
        sampled_own = {(r["seed"], records.cpu_of(r)) for r in mine if r["variant"] == own}
        networks = {(r["seed"], records.cpu_of(r)) for r in mine} - sampled_own
        for seed, cpu in sorted(networks):  # the benchmark's record is that variant
            found += own_record(args, library, recipe, seed, budget, cpu)
        found += mine
    return found


def _network(name: str) -> tuple[str, str]:
    library, _, recipe = name.partition("/")
    if library not in libs.LIBRARIES:
        raise argparse.ArgumentTypeError(
            f"network {name!r}: LIBRARY[/RECIPE] with LIBRARY in {', '.join(libs.LIBRARIES)}"
        )
    if recipe and library != libs.OURS:
        raise argparse.ArgumentTypeError(f"network {name!r}: only {libs.OURS} has recipes")
    recipe = recipe or "default"
    if recipe not in RECIPES:
        raise argparse.ArgumentTypeError(f"network {name!r}: unknown recipe; known: {', '.join(RECIPES)}")
    return library, recipe


def _variant(name: str) -> str:
    try:
        parse_variant(name)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return name


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, help="the folder given to peer_quality --keep-weights")
    p.add_argument("--report", action="store_true", help="print the table from the results files alone")
    p.add_argument("--networks", nargs="+", type=_network, default=[(libs.DIFFUSERS, "default")],
                   help="LIBRARY[/RECIPE] of the kept networks to sample (default: diffusers)")  # fmt: skip
    p.add_argument("--variants", nargs="+", type=_variant, default=["ours", "diffusers"],
                   help=f"CLIP/SPACING (CLIP: {', '.join(CLIPS)}) or {', '.join(NAMED)}")  # fmt: skip
    p.add_argument("--data", default="digits", choices=["digits", "shapes"])
    p.add_argument("--minutes", type=float, default=16.0, help="the runs' budget (peer_quality --minutes)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: every kept seed")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--x-t", dest="noise", default=peer_runs.PER_SEED_NOISE,
                   choices=[peer_runs.PER_SEED_NOISE, peer_runs.SHARED_NOISE])  # fmt: skip
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--peer-results", type=Path, default=PEER_RESULTS,
                   help="peer_quality's results: a network's record there is its own DDIM's row")  # fmt: skip
    p.add_argument("--cache", type=Path, default=peer_runs.DEFAULT_CACHE)
    p.add_argument("--quick", action="store_true", help="the quick data of peer_quality --quick (the test suite)")
    args = p.parse_args(argv)
    args.command = records.command("sampler_variants", argv)
    if args.report:
        found = recorded(args)
        if not found:
            p.error(f"no records in {args.results} for {args.networks} with {args.variants}")
        print(tables.variants(found, NAMED.__getitem__))
        return found
    if args.weights is None:
        p.error("--weights DIR is required (or --report)")
    if not args.weights.is_dir():
        p.error(f"--weights {args.weights}: no such folder")
    torch.set_num_threads(args.threads)
    try:
        found = measure(args)
    except ValueError as err:  # a continuous-time recipe has no ᾱ table
        p.error(str(err))
    if not found:
        p.error(f"no kept networks of {args.data} at {args.minutes:g} minutes in {args.weights} for {args.networks}")
    print(tables.variants(found, NAMED.__getitem__))
    return found


if __name__ == "__main__":
    main()
