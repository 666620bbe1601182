"""``denoising-diffusion export CHECKPOINT DIR``: a checkpoint as a directory to share (``config.json`` +
``model.safetensors``, pretrained.py), and with ``--push-to-hub REPO_ID`` on the Hugging Face Hub too."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..pretrained import check_repo_id, push_to_hub, resolve_source, save_pretrained
from .args import MODEL_HELP


def add_export_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a checkpoint as config.json + model.safetensors (and upload it to the Hub)",
        description="Rebuild the model of CHECKPOINT and write it to DIR as config.json (its spec) and "
        "model.safetensors (its weights, no pickle), which from_pretrained, `sample DIR` and every other command "
        "read; with --push-to-hub also upload DIR's files to a Hugging Face Hub repo.",
    )
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help=MODEL_HELP)
    p.add_argument("directory", type=Path, metavar="DIR", help="where to write (created; an earlier export replaced)")
    p.add_argument("--no-ema", action="store_true", help="export the online weights instead of the EMA weights")
    p.add_argument("--push-to-hub", metavar="REPO_ID", default=None,
                   help="also upload to this Hub repo (namespace/name; created if needed; token: HF_TOKEN or "
                   "`hf auth login`)")  # fmt: skip
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    p.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    """The ``export`` subcommand: load (EMA weights unless --no-ema), write DIR, upload with --push-to-hub."""
    if args.push_to_hub is not None:
        check_repo_id(args.push_to_hub)  # before anything is written
    model = resolve_source(args.checkpoint).load(use_ema=not args.no_ema)
    print(f"exported:   {save_pretrained(model, args.directory)} ({type(model).__name__})")
    if args.push_to_hub is not None:
        print(f"uploaded:   {push_to_hub(model, args.push_to_hub, private=args.private or None)}")
    return 0
