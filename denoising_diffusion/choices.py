"""String options at the edge, enums inside (STYLE.md, R3): the base of every option enum of the package."""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """An option given as a string. ``Objective("pred_eps")`` raises ValueError("unknown objective 'pred_eps';
    allowed values: 'pred_noise', 'pred_x0', 'pred_v'"). Subclasses name the option in ``__option__`` (a dunder,
    so not a member) and may add a hint in ``__hint__``."""

    @classmethod
    def _missing_(cls, value: object) -> None:
        allowed = ", ".join(repr(member.value) for member in cls)
        option = getattr(cls, "__option__", cls.__name__)
        raise ValueError(f"unknown {option} {value!r}; allowed values: {allowed}{getattr(cls, '__hint__', '')}")
