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

Every kind shares itself the same way: :class:`PretrainedMixin` gives it ``save_pretrained``, ``from_pretrained``
and ``push_to_hub``. The model classes sit below the pipeline and may not import it, yet saving a model needs its
spec and loading one the pipeline's ``build``; so the mixin's methods only delegate, through a table that
pretrained.py fills when it is imported (:func:`provide_sharing`), to the functions there. The package root imports
pretrained.py, and Python runs the package root before any of its modules, so the table is full whenever a model
class exists: the kind table's pattern turned around (a lower layer reaches an upper one through a table the upper
one fills, never by an import).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T", bound=type)
M = TypeVar("M")


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


# ----- what every kind can do: be shared (pretrained.py) ------------------------------------------------------------


@dataclass(frozen=True)
class Sharing:
    """The three functions of pretrained.py the mixin delegates to (see there for their arguments)."""

    save: Callable[..., Path]
    load: Callable[..., Any]
    push: Callable[..., str]


_SHARING: list[Sharing] = []


def provide_sharing(sharing: Sharing) -> None:
    """Fill the table (pretrained.py does, once, when it is imported)."""
    _SHARING[:] = [sharing]


def _sharing() -> Sharing:
    if not _SHARING:  # only if this module is loaded outside the package
        raise RuntimeError("denoising_diffusion.pretrained is not imported: `import denoising_diffusion` first")
    return _SHARING[0]


class PretrainedMixin:
    """Share a model as a directory of ``config.json`` + ``model.safetensors`` (pretrained.py), locally or on the
    Hugging Face Hub. A model kind lists it first among its bases (``class Unet(PretrainedMixin, nn.Module)``);
    nothing else is needed, for a composition of parts as for a single network."""

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write this model to ``directory`` (created): pretrained.save_pretrained."""
        return _sharing().save(self, directory)

    @classmethod
    def from_pretrained(cls: type[M], source: str | os.PathLike[str], **options: Any) -> M:
        """Rebuild a model of this class from a directory written by ``save_pretrained`` or a Hub repo id
        (``options``: revision, cache_dir, token, local_files_only, device): pretrained.from_pretrained. Raises
        CheckpointError when the source holds another kind."""
        return _sharing().load(source, expected=cls, **options)

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Upload this model to the Hub repo ``repo_id`` (``options``: private, token, revision, commit_message,
        create_pr); returns the commit's URL: pretrained.push_to_hub."""
        return _sharing().push(self, repo_id, **options)
