"""A stand-in for the Hugging Face Hub in tests: an offline, pre-filled cache and a recording HfApi. Nothing here
reaches the network."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import huggingface_hub
import huggingface_hub.constants
import pytest


def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache in tmp_path, with the Hub offline (what HF_HUB_OFFLINE=1 and HF_HUB_CACHE do when
    huggingface_hub is imported, set on its constants because it is imported already)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def fill_cache(cache: Path, repo_id: str, saved: Path, commit: str = "0123456789abcdef" * 2 + "01234567") -> None:
    """Put ``saved``'s files into ``cache`` as huggingface_hub lays out a downloaded snapshot of ``repo_id``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(saved, repo / "snapshots" / commit)


class StandInApi:
    """Records what push_to_hub asks of huggingface_hub.HfApi, and what the uploaded folder held."""

    calls: list[tuple[str, dict[str, Any]]] = []
    uploaded: dict[str, bytes] = {}

    def __init__(self, **kwargs: Any) -> None:
        StandInApi.calls.append(("init", kwargs))

    def create_repo(self, repo_id: str, **kwargs: Any) -> str:
        StandInApi.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id: str, folder_path: str, **kwargs: Any) -> Any:
        StandInApi.calls.append(("upload_folder", {"repo_id": repo_id, **kwargs}))
        StandInApi.uploaded = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc", "pr_url": None})


def stand_in_hub(monkeypatch: pytest.MonkeyPatch) -> type[StandInApi]:
    """huggingface_hub.HfApi replaced by a fresh StandInApi."""
    monkeypatch.setattr(huggingface_hub, "HfApi", StandInApi)
    StandInApi.calls, StandInApi.uploaded = [], {}
    return StandInApi
