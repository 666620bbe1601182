"""Tests for the checkpoint file format (atomic save, weights_only load, clear errors) and for rebuilding models from
checkpoints through the pipeline registry (pipeline.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ema_pytorch import EMA

from denoising_diffusion.checkpoint import (
    CheckpointError,
    CorruptCheckpointError,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
    verify_checkpoint_file,
)
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.nn.unet import Unet
from denoising_diffusion.pipeline import load_pipeline, load_weights, spec_of


class NotAllowed:
    """A custom class: pickling it into a checkpoint must never be loadable."""

    def __init__(self) -> None:
        self.value = 1


class Exploit:
    """Unpickling this calls open(marker, 'w'): a stand-in for code a hostile checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead (and stall when the CPU is shared)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def tiny_diffusion(dim: int = 8) -> GaussianDiffusion:
    unet = Unet(dim, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    return GaussianDiffusion(unet, image_size=8, timesteps=10)


def test_round_trip_keeps_tensors_and_plain_values(tmp_path: Path) -> None:
    payload = {"w": torch.randn(3, 4), "step": 7, "nested": {"a": [1, 2.5, "x", None, True], 0: (1, 2)}}
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pt", payload)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["w"], payload["w"])
    assert loaded["step"] == 7 and loaded["nested"] == payload["nested"]
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temporary file left behind


def test_save_refuses_python_objects_and_leaves_the_old_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "ckpt.pt", {"step": 1})
    with pytest.raises(TypeError, match=r"payload\['bad'\]\[0\].*NotAllowed"):
        save_checkpoint(path, {"bad": [NotAllowed()]})
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_a_failed_write_leaves_the_old_file_intact(tmp_path: Path, monkeypatch) -> None:
    path = save_checkpoint(tmp_path / "ckpt.pt", {"step": 1})

    def failing_save(obj, file) -> None:
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")


def flip_a_byte_in_the_middle(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01  # inside the tensor data, which torch.load alone does not check
    return bytes(flipped)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "bitflip", "tail"])
def test_corrupt_file_is_a_clear_error_naming_it(tmp_path: Path, damage: str) -> None:
    path = save_checkpoint(tmp_path / "model-3.pt", {"w": torch.randn(1000)})
    data = path.read_bytes()
    path.write_bytes(
        {
            "truncate": data[: len(data) // 2],
            "garbage": b"not a checkpoint",
            "empty": b"",
            "bitflip": flip_a_byte_in_the_middle(data),
            "tail": data[:-10],
        }[damage]
    )
    with pytest.raises(CorruptCheckpointError, match="model-3.pt"):
        load_checkpoint(path)
    with pytest.raises(CorruptCheckpointError, match="model-3.pt"):
        verify_checkpoint_file(path)


def test_verify_checkpoint_file_accepts_a_good_file(tmp_path: Path) -> None:
    verify_checkpoint_file(save_checkpoint(tmp_path / "model-1.pt", {"w": torch.randn(100)}))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model-1.pt"
    torch.save({"format_version": 1, "step": Exploit(marker)}, path)  # a crafted file, as an attacker would
    with pytest.raises(CheckpointError, match=r"model-1.pt.*pickled Python object.*open.*arbitrary code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_pickled_custom_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"obj": NotAllowed()}, path)  # written behind save_checkpoint's back
    with pytest.raises(CheckpointError, match=r"evil.pt.*NotAllowed.*weights_only") as info:
        load_checkpoint(path)
    assert "arbitrary code" in str(info.value)


def test_non_dict_checkpoint_is_refused(tmp_path: Path) -> None:
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt.*expected a dict"):
        load_checkpoint(tmp_path / "list.pt")


def trained_checkpoint(tmp_path: Path) -> tuple[Path, GaussianDiffusion, EMA]:
    """A checkpoint whose EMA weights differ from the online weights."""
    diffusion = tiny_diffusion()
    ema = EMA(diffusion.model, beta=0.9, update_every=1, update_after_step=0, include_online_model=False)
    ema.update()  # first update copies the online weights
    with torch.no_grad():
        for p in diffusion.model.parameters():
            p.add_(0.1)
    ema.update()
    opt = torch.optim.Adam(diffusion.parameters())
    payload = make_checkpoint(
        config=spec_of(diffusion),
        step=5,
        model=diffusion.model.state_dict(),
        ema=ema.state_dict(),
        opt=opt.state_dict(),
    )
    return save_checkpoint(tmp_path / "model-1.pt", payload), diffusion, ema


def test_checkpoint_layout(tmp_path: Path) -> None:
    path, diffusion, _ = trained_checkpoint(tmp_path)
    checkpoint = load_checkpoint(path)
    assert checkpoint["format_version"] == 3 and checkpoint["step"] == 5
    spec = checkpoint["config"]
    assert spec["kind"] == "GaussianDiffusion" and spec["model"]["kind"] == "Unet"
    assert Unet(**{k: v for k, v in spec["model"].items() if k != "kind"}).config == diffusion.model.config
    assert {k: v for k, v in spec.items() if k not in ("kind", "model")} == diffusion.config
    assert not any(k.startswith("online_model") for k in checkpoint["ema"])  # the EMA does not duplicate weights
    assert set(checkpoint["model"]) == set(diffusion.model.state_dict())  # network weights only, no schedule


@pytest.mark.parametrize("use_ema", [True, False])
def test_load_pipeline_rebuilds_and_samples(tmp_path: Path, use_ema: bool) -> None:
    path, diffusion, ema = trained_checkpoint(tmp_path)
    loaded = load_pipeline(path, use_ema=use_ema)
    expected = ema.ema_model.state_dict() if use_ema else diffusion.model.state_dict()
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert not loaded.training and loaded.config == diffusion.config
    images = loaded.sample(batch_size=2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 8, 8) and images.min() >= 0 and images.max() <= 1


def test_load_weights_names_the_mismatching_config_fields(tmp_path: Path) -> None:
    path, _, _ = trained_checkpoint(tmp_path)
    other = tiny_diffusion(dim=16)
    with pytest.raises(CheckpointError, match=r"model\.dim: checkpoint has 8, this model has 16"):
        load_weights(other, load_checkpoint(path))
    same = tiny_diffusion(dim=8)
    load_weights(same, load_checkpoint(path), use_ema=False)
    assert torch.equal(
        next(same.model.parameters()), load_checkpoint(path)["model"][next(iter(same.model.state_dict()))]
    )


def test_load_pipeline_refuses_unknown_networks(tmp_path: Path) -> None:
    path, _, _ = trained_checkpoint(tmp_path)
    checkpoint = load_checkpoint(path)
    checkpoint["config"]["model"]["kind"] = "MyNet"
    save_checkpoint(path, checkpoint)
    with pytest.raises(CheckpointError, match="'MyNet'"):
        load_pipeline(path)


def test_newer_format_is_refused(tmp_path: Path) -> None:
    path, _, _ = trained_checkpoint(tmp_path)
    checkpoint = load_checkpoint(path)
    checkpoint["format_version"] = 99
    save_checkpoint(path, checkpoint)
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_pipeline(path)
