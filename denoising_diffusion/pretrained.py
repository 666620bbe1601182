"""Models shared as files any library can read: a directory of ``config.json`` (the model's spec) and
``model.safetensors`` (the weights of the whole object, no pickle), on disk or on the Hugging Face Hub.

* :func:`save_pretrained` writes the directory (and a small model card, ``README.md``, unless one is there);
* :func:`from_pretrained` rebuilds the model from such a directory, or from a Hub repo id through
  ``huggingface_hub.snapshot_download`` (its cache, its ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and ``HF_TOKEN``);
* :func:`push_to_hub` writes the directory to a temporary folder and uploads it with ``HfApi.upload_folder``;
* :func:`resolve_source` is the command line's one resolver: a checkpoint file, a directory, or a repo id.

Every registered model kind works, compositions included: the spec is :func:`pipeline.spec_of`'s, the model is
rebuilt by :func:`pipeline.build` (only registered kinds; a config never chooses code), and the weights are the
state dict of the whole object, read back with safetensors (no code can run on load). The model classes reach
these functions through :class:`registry.PretrainedMixin` (``model.save_pretrained(dir)``,
``GaussianDiffusion.from_pretrained(repo_id)``). safetensors and huggingface_hub come with the ``hub`` extra
(``pip install 'denoising-diffusion[hub]'``; accelerate installs both already).

``config.json``: ``{"format": "denoising_diffusion.pretrained", "format_version": 1, "package_version": ...,
"spec": {"kind": ..., ...}}``. Each file is written to a temporary name and renamed into place, the weights first.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .checkpoint import CheckpointError, load_checkpoint
from .pipeline import Spec, build, checkpoint_spec, load_pipeline, spec_of, unbuildable_parts
from .registry import Sharing, provide_sharing

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT = "denoising_diffusion.pretrained"
FORMAT_VERSION = 1
LIBRARY = "denoising-diffusion"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""A Hub repo id as this module accepts one: ``namespace/name`` (a bare name is taken for a local path)."""
CARD_MARK = "<!-- written by denoising_diffusion.save_pretrained -->"


def _import(module: str, purpose: str) -> Any:
    """``module``, or ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{purpose} needs {module.split('.')[0]}: pip install 'denoising-diffusion[hub]'") from err


# ----- writing --------------------------------------------------------------------------------------------------------


def save_pretrained(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
    """Write ``model`` (any registered kind) to ``directory``: ``config.json``, ``model.safetensors`` and, unless
    the directory has its own, a model card ``README.md``. Returns the directory.

    Raises ValueError, before writing anything, when a part is not a registered kind, the config is not JSON, or
    the directory holds a ``config.json`` that save_pretrained did not write (another library's model is never
    overwritten; an earlier save_pretrained's files are replaced).
    """
    spec = spec_of(model)
    missing = unbuildable_parts(spec)
    if missing:
        raise ValueError(
            f"cannot save {', '.join(missing)} with save_pretrained: not a registered model kind (decorate its "
            "class with @model_kind and record its constructor arguments in .config)"
        )
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__, "spec": spec}
    try:
        text = json.dumps(config, indent=2) + "\n"
    except TypeError as err:
        raise ValueError(f"the model's config cannot be written as JSON: {err}") from None
    directory = Path(directory)
    _check_target(directory)
    save_file = _import("safetensors.torch", "save_pretrained").save_file
    directory.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "kind": spec["kind"], "package_version": __version__}
    _atomic(directory / WEIGHTS_NAME, lambda tmp: save_file(_plain_tensors(model.state_dict()), tmp, metadata))
    _atomic(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))
    card = directory / CARD_NAME
    if not card.exists() or CARD_MARK in card.read_text(errors="replace"):
        _atomic(card, lambda tmp: Path(tmp).write_text(model_card(spec)))
    return directory


def _check_target(directory: Path) -> None:
    """ValueError when ``directory`` is a file, or holds a config.json that is not this module's."""
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"cannot save to {os.fspath(directory)!r}: it is a file, not a directory")
    config = directory / CONFIG_NAME
    if config.exists():
        try:
            ours = json.loads(config.read_text()).get("format") == FORMAT
        except (ValueError, AttributeError):
            ours = False
        if not ours:
            raise ValueError(
                f"{os.fspath(config)!r} was not written by save_pretrained; it is left alone: choose another directory"
            )


def _atomic(path: Path, write: Any) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it into place (no half-written file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _plain_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors, each with storage of its own (safetensors refuses shared storage;
    :func:`pipeline.build` rebuilds tied parts untied, so each is stored in full)."""
    seen: set[int] = set()
    plain = {}
    for key, value in state.items():
        tensor = value.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        plain[key] = tensor.clone() if pointer in seen and tensor.numel() else tensor
        seen.add(pointer)
    return plain


def model_card(spec: Spec, repo_id: str | None = None) -> str:
    """A short Hub model card: the library, the kind, and how to load it."""
    source = repo_id or "PATH_OR_REPO_ID"
    return (
        f"---\nlibrary_name: {LIBRARY}\ntags:\n- {LIBRARY}\n- diffusion\n- {spec['kind']}\n---\n{CARD_MARK}\n\n"
        f"# {spec['kind']}\n\nA `{spec['kind']}` saved by denoising_diffusion {__version__} (`config.json` holds its "
        "spec, `model.safetensors` its weights).\n\n```python\nfrom denoising_diffusion import from_pretrained\n"
        f'model = from_pretrained("{source}")\n```\n\nor, for a model that samples, '
        f"`denoising-diffusion sample {source}`.\n"
    )


# ----- reading --------------------------------------------------------------------------------------------------------


def from_pretrained(
    source: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    device: str | torch.device = "cpu",
    expected: type | None = None,
) -> Any:
    """Rebuild a model, in eval mode on ``device``, from a directory written by :func:`save_pretrained` or from a
    Hub repo id ``namespace/name`` (``revision``, ``cache_dir``, ``token``, ``local_files_only`` go to
    ``huggingface_hub.snapshot_download``; with ``HF_HUB_OFFLINE=1`` only its cache is read).

    Raises CheckpointError naming the source when it is not a saved model, a repo id is neither cached nor
    reachable, the spec names an unregistered kind, the weights do not fit it, or the model is not an ``expected``.
    """
    directory = pretrained_directory(source, revision=revision, cache_dir=cache_dir, token=token,
                                     local_files_only=local_files_only)  # fmt: skip
    spec, where = read_spec(directory), f"{os.fspath(source)!r}"
    try:
        model = build(spec)
    except ValueError as err:
        raise CheckpointError(f"{where}: {err}") from None
    if expected is not None and not isinstance(model, expected):
        raise CheckpointError(f"{where} holds a {type(model).__name__}, not a {expected.__name__}: load it with "
                              "denoising_diffusion.from_pretrained, which rebuilds any kind")  # fmt: skip
    _load_weights(model, directory / WEIGHTS_NAME, where)
    return model.to(device).eval()


def pretrained_directory(source: str | os.PathLike[str], **hub_options: Any) -> Path:
    """The local directory of ``source``: itself when it is a directory, else the Hub snapshot of the repo id."""
    path = Path(source)
    if path.is_dir():
        return path
    text = os.fspath(source)
    if path.exists():
        raise CheckpointError(
            f"{text!r} is a file, not a saved model's directory (save_pretrained writes one; a training checkpoint "
            "loads with load_pipeline, or export it: denoising-diffusion export CHECKPOINT DIR)"
        )
    if not REPO_ID.fullmatch(text) or text.endswith(CHECKPOINT_SUFFIXES):
        raise CheckpointError(f"no such directory: {text!r} (a Hub repo id reads namespace/name)")
    return _snapshot(text, **hub_options)


def _snapshot(repo_id: str, **hub_options: Any) -> Path:
    """The Hub snapshot of ``repo_id`` holding our files (from the cache when offline); CheckpointError otherwise."""
    hub = _import("huggingface_hub", "loading a model by its Hub repo id")
    errors = importlib.import_module("huggingface_hub.errors")
    try:
        folder = hub.snapshot_download(
            repo_id, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME], library_name=LIBRARY,
            library_version=__version__, **hub_options,
        )  # fmt: skip
    except errors.LocalEntryNotFoundError:
        constants = importlib.import_module("huggingface_hub.constants")
        offline = " and the Hub is offline (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else ""
        cache = hub_options.get("cache_dir") or constants.HF_HUB_CACHE
        raise CheckpointError(
            f"{repo_id!r} is no local directory, and as a Hub repo id it is not in the Hugging Face cache "
            f"({os.fspath(cache)}){offline}: download it once online, or give the directory save_pretrained wrote"
        ) from None
    except (OSError, ValueError) as err:  # not found, gated, no such revision, no network, an invalid id
        text = " ".join(str(err).split())
        raise CheckpointError(f"{repo_id!r} is no local directory, and the Hugging Face Hub says: {text}") from None
    return Path(folder)


def read_spec(directory: Path) -> Spec:
    """The spec in ``directory``'s config.json; CheckpointError naming what is missing or wrong."""
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        checkpoints = sorted(p.name for p in directory.glob("model-*.pt"))[-1:]
        hint = f"; it holds training checkpoints: pass one of them (e.g. {checkpoints[0]})" if checkpoints else ""
        raise CheckpointError(f"{os.fspath(directory)!r} is not a saved model: it has no {CONFIG_NAME} (written by "
                              f"save_pretrained or `denoising-diffusion export`){hint}")  # fmt: skip
    try:
        config = json.loads(config_path.read_text())
    except ValueError as err:
        raise CheckpointError(f"{os.fspath(config_path)!r} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or not isinstance(config.get("spec"), dict):
        raise CheckpointError(f"{os.fspath(config_path)!r} was not written by save_pretrained (no \"format\": "
                              f"{FORMAT!r} and \"spec\"): another library's model?")  # fmt: skip
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{os.fspath(config_path)!r} has format_version {config['format_version']}, newer than "
                              f"this release reads ({FORMAT_VERSION}): upgrade denoising-diffusion")  # fmt: skip
    return dict(config["spec"])


def _load_weights(model: nn.Module, path: Path, where: str) -> None:
    """Load ``path`` with safetensors into ``model``; CheckpointError naming missing, unexpected or misshapen
    tensors (instead of torch's wall of keys)."""
    if not path.is_file():
        raise CheckpointError(f"{where} has no {WEIGHTS_NAME}")
    safetensors = _import("safetensors.torch", "from_pretrained")
    try:
        weights = safetensors.load_file(os.fspath(path), device="cpu")
    except Exception as err:  # noqa: BLE001 - safetensors raises its own SafetensorError for damaged files
        raise CheckpointError(f"{where}: {WEIGHTS_NAME} is not a readable safetensors file: {err}") from None
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in weights and weights[k].shape != v.shape]  # fmt: skip
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{where}: {WEIGHTS_NAME} does not fit the model its config.json describes: missing {missing[:3] or 'none'}"
            f", unexpected {unexpected[:3] or 'none'}, other shapes {shapes[:3] or 'none'}"
        )
    model.load_state_dict(weights)


# ----- uploading ------------------------------------------------------------------------------------------------------


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> str:
    """Upload ``model`` to the Hub repo ``repo_id`` (created if needed, ``private`` as given): the directory
    :func:`save_pretrained` writes, in one commit. Returns the commit's URL. The token: ``token``, else ``HF_TOKEN``
    or the one ``hf auth login`` stored."""
    hub = _import("huggingface_hub", "push_to_hub")
    check_repo_id(repo_id)
    api = hub.HfApi(token=token, library_name=LIBRARY, library_version=__version__)
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(model, folder)
        Path(folder, CARD_NAME).write_text(model_card(spec_of(model), repo_id))
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr, repo_type="model",
            commit_message=commit_message or f"Upload {type(model).__name__} with denoising_diffusion {__version__}",
        )  # fmt: skip
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it reads namespace/name, else ValueError."""
    if not isinstance(repo_id, str) or not REPO_ID.fullmatch(repo_id):
        raise ValueError(f"repo_id must read namespace/name (a user or organisation, then the model), got {repo_id!r}")
    return repo_id


provide_sharing(Sharing(save=save_pretrained, load=from_pretrained, push=push_to_hub))


# ----- the command line's resolver ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """Where a command's model comes from: a checkpoint or pipeline file (``pretrained`` false), or a saved model's
    directory (local, or a Hub snapshot). ``name`` is what the user gave."""

    name: str
    path: Path
    pretrained: bool

    def load(self, *, use_ema: bool = True, device: str | torch.device = "cpu") -> Any:
        """The model in eval mode on ``device`` (a training checkpoint's EMA weights unless ``use_ema`` is off)."""
        if self.pretrained:
            return from_pretrained(self.path, device=device)
        return load_pipeline(self.path, use_ema=use_ema, device=device)

    def spec(self) -> Spec:
        """The model's spec, without loading its weights."""
        return read_spec(self.path) if self.pretrained else checkpoint_spec(load_checkpoint(self.path))


def resolve_source(text: str | os.PathLike[str]) -> ModelSource:
    """The one resolver of every command that takes a model: an existing file is a checkpoint (or pipeline file),
    an existing directory a saved model, ``namespace/name`` without a file suffix a Hub repo id (its snapshot,
    downloaded or from the cache). Anything else is a checkpoint path, so a missing one reads
    "checkpoint file not found". Raises CheckpointError for a directory that is not a saved model or a repo id that
    cannot be had."""
    name, path = os.fspath(text), Path(text)
    if path.is_dir():
        read_spec(path)  # a directory that is not a saved model is refused here, naming it
        return ModelSource(name, path, pretrained=True)
    if not path.exists() and REPO_ID.fullmatch(name) and not name.endswith(CHECKPOINT_SUFFIXES):
        return ModelSource(name, pretrained_directory(name), pretrained=True)
    return ModelSource(name, path, pretrained=False)
