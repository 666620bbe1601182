"""The command line: ``denoising-diffusion COMMAND`` (also ``python -m denoising_diffusion``).

* ``train [FOLDER]``: train a Unet + GaussianDiffusion with the Trainer. Without FOLDER it trains on the built-in
  procedural shapes with a small recipe that finishes in a few minutes on a laptop CPU (:data:`BUILTIN_PRESET`);
  with FOLDER the images' own size and the recipe of that size (presets.py; :data:`FOLDER_PRESET` at 128 px).
* ``sample CHECKPOINT``: rebuild the pipeline from a checkpoint alone and write a PNG grid (and a denoising GIF).
* ``samplers``: list the sampler registry.
* ``nll CHECKPOINT FOLDER``: the model's likelihood of a folder of images, in bits per dimension.
* ``train-classifier [FOLDER]``: a noise-aware classifier for classifier guidance (``sample --classifier``).
* ``inpaint CHECKPOINT IMAGE MASK`` and ``img2img CHECKPOINT IMAGE --strength S``: RePaint and SDEdit.
* ``eval CHECKPOINT REAL --num N``: FID, KID, precision/recall of N samples against a folder of real images.
* ``sweep CHECKPOINT REAL --samplers S1,S2 --nfe 5,10,20``: those metrics per sampler and network evaluations.
* ``reflow CHECKPOINT --pairs N``: rectified flow's reflow (couplings, a straighter student trained on them).

User errors (a missing folder or checkpoint, an empty folder, a corrupt checkpoint, an invalid option value) end
with one line ``denoising-diffusion: error: <message>`` on stderr and exit status 2, never a traceback.
One module per subcommand (train.py, sample.py, nll.py, train_classifier.py, inpaint.py, img2img.py,
evaluate.py, sweep.py); docs/cli.md documents every option and why its default was chosen. A missing optional
dependency (ImportError naming the extra to install) is reported the same way.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from .._version import __version__
from ..training import ResultsFolderInUseError, TrainingDivergedError
from .args import EXIT_USAGE, PROG
from .evaluate import add_eval_parser
from .export import add_export_parser
from .img2img import add_img2img_parser
from .inpaint import add_inpaint_parser
from .nll import add_nll_parser
from .presets import BUILTIN_PRESET, FOLDER_PRESET, resolve_train_options
from .progress import bar_safe_messages
from .reflow import add_reflow_parser
from .sample import add_sample_parser, add_samplers_parser
from .sample_cascade import add_sample_cascade_parser
from .sweep import add_sweep_parser
from .threads import default_threads
from .train import add_train_parser
from .train_autoencoder import add_train_autoencoder_parser
from .train_classifier import add_train_classifier_parser

__all__ = ["BUILTIN_PRESET", "FOLDER_PRESET", "build_parser", "main", "resolve_train_options"]


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of all subcommands; each sets ``args.run`` to its handler."""
    parser = argparse.ArgumentParser(prog=PROG, description="Denoising diffusion models: train, sample, inspect.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_parser(subparsers)
    add_sample_parser(subparsers)
    add_samplers_parser(subparsers)
    add_nll_parser(subparsers)
    add_train_classifier_parser(subparsers)
    add_inpaint_parser(subparsers)
    add_img2img_parser(subparsers)
    add_eval_parser(subparsers)
    add_sweep_parser(subparsers)
    add_export_parser(subparsers)
    add_sample_cascade_parser(subparsers)
    add_train_autoencoder_parser(subparsers)
    add_reflow_parser(subparsers)
    return parser


def _one_line(err: BaseException) -> str:
    """The error's message on one line. An error re-raised from a DataLoader worker carries the worker's whole
    traceback in its message; its last line holds the original message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if any("Traceback (most recent call last)" in line for line in lines):  # torch: "Original Traceback ..."
        last = lines[-1]
        prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
        return last[len(prefix) :] if last.startswith(prefix) else last
    text = ""
    for line in lines:  # "a list:" + its items reads "a list: x; y", never "a list:; x"
        text += line if not text else (" " if text.endswith(":") else "; ") + line
    return text or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); returns the exit status.

    User errors print ``denoising-diffusion: error: <message>`` on stderr and return 2; warnings print as
    ``denoising-diffusion: warning: <message>`` above any progress bar. The thread count (``--threads``, else
    threads.default_threads) is undone before returning, so that calling main() in-process leaves torch as it found
    it.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or argparse's own usage error (already printed)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    threads = torch.get_num_threads()
    if hasattr(args, "threads"):  # commands that compute: --threads, else a count that avoids spin-waiting
        torch.set_num_threads(args.threads if args.threads is not None else default_threads())
    try:
        with bar_safe_messages():
            return args.run(args)
    except (ValueError, OSError, ImportError, TrainingDivergedError, ResultsFolderInUseError) as err:
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)  # CheckpointError is a ValueError
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)
