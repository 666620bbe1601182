"""Argument types and shared options of the command line. Each type raises ArgumentTypeError, which argparse
reports as "argument --x: <message>"."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

PROG = "denoising-diffusion"
EXIT_USAGE = 2  # argparse's status for bad arguments; used for every user error


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def dim_mults(text: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4): comma-separated positive integers."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,2,4, got {text!r}")
    return tuple(int(part) for part in parts)


def device(text: str) -> torch.device:
    """A torch device name: cpu, cuda, cuda:1, mps ..."""
    try:
        return torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None


def _values(enum: Any) -> list[str]:
    return [member.value for member in enum]


def _add_threads_option(parser: Any) -> None:
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: torch's own choice; 1 helps on a busy machine)",
    )
