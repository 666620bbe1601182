"""The model kinds that :mod:`~denoising_diffusion.pipeline` can rebuild from a config: a table that classes join
by decorating themselves.

A kind is a class with a JSON-able ``config`` (its constructor arguments) whose constructor rebuilds it from that
config, plus the names of its *parts*: constructor arguments that are themselves models (GaussianDiffusion's
``model``; later a cascade's stages, a latent model's autoencoder). New kinds join the table where they are
defined, without editing this module or the pipeline::

    @model_kind(parts=("model",))
    class GaussianDiffusion(nn.Module): ...

Only registered classes are ever built from a config, so a checkpoint chooses among the classes the code has
registered and never names arbitrary code (unlike dotted ``class_name`` strings). Registering is the only thing a
module does at import time (DESIGN.md, Who may import whom). This module imports nothing from the package, so
any layer (nn/, diffusion.py) may register its classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class ModelKind:
    """A registered class: ``name`` (stored in configs), the class, and its parts (constructor arguments that hold
    models: a model, or a list of models)."""

    name: str
    cls: type
    parts: tuple[str, ...] = ()


_KINDS: dict[str, ModelKind] = {}


def model_kind(name: str | None = None, *, parts: Sequence[str] = ()) -> Callable[[T], T]:
    """Class decorator: register the class as a model kind named ``name`` (default: the class name).

    The class must record its constructor arguments as a JSON-able dict ``config`` (without its parts). Raises
    ValueError when another class already holds the name (re-registering the same class, as a module reload does,
    is allowed).
    """

    def register(cls: T) -> T:
        kind = ModelKind(name or cls.__name__, cls, tuple(parts))
        existing = _KINDS.get(kind.name)
        if existing is not None and _qualified(existing.cls) != _qualified(cls):
            raise ValueError(
                f"model kind {kind.name!r} is already registered by {_qualified(existing.cls)}; "
                f"register {_qualified(cls)} under another name"
            )
        _KINDS[kind.name] = kind
        return cls

    return register


def kind_named(name: str) -> ModelKind | None:
    """The kind registered as ``name``, or None."""
    return _KINDS.get(name)


def kind_of(cls: type) -> ModelKind | None:
    """The kind registered for exactly this class (a subclass is a kind of its own only if registered itself)."""
    return next((kind for kind in _KINDS.values() if kind.cls is cls), None)


def registered_kinds() -> list[str]:
    """The names of every registered kind, sorted."""
    return sorted(_KINDS)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class KindTable:
    """A table of named classes that classes join by decorating themselves (processes, loss weightings, training
    time distributions): the registry pattern of model kinds, one table per concept.

    ``table.register("name")`` is a class decorator that records the class and sets its ``name`` attribute (what
    configs store); :meth:`get` is the string at the edge, with an error that lists the registered names, each
    described by ``describe(cls)`` (e.g. its options). Re-registering the same class (a module reload) is allowed;
    another class under a taken name is a ValueError.
    """

    def __init__(self, what: str, describe: Callable[[type], str] | None = None) -> None:
        self.what = what
        self._describe = describe
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def register(cls: T) -> T:
            existing = self._classes.get(name)
            if existing is not None and _qualified(existing) != _qualified(cls):
                raise ValueError(f"{self.what} {name!r} is already registered by {_qualified(existing)}")
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return register

    def get(self, name: object) -> type:
        """The class registered as ``name``; ValueError naming the registered ones otherwise."""
        cls = self._classes.get(name) if isinstance(name, str) else None
        if cls is None:
            known = "; ".join(
                f"{key} ({self._describe(c)})" if self._describe else key for key, c in sorted(self._classes.items())
            )
            raise ValueError(f"unknown {self.what} {name!r}; registered: {known}")
        return cls

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes
