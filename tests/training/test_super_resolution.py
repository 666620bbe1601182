"""A super-resolution stage trained by the ordinary Trainer from a folder (docs/cascade.md): a bad file skipped,
previews of the low-resolution input beside the output and the original, checkpoints that rebuild the stage from
the file alone, an exact resume, mixed precision, and a cascade assembled from the Trainer's own checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from test_resume_kill import assert_identical
from trainer_helpers import isolated_accelerate, make_trainer, reset_accelerate  # noqa: F401 (autouse fixture)

from denoising_diffusion import Cascade, GaussianDiffusion, SuperResolution, Unet, load_checkpoint, load_pipeline
from denoising_diffusion.cascade import downsample
from denoising_diffusion.data.datasets import ImageFolderDataset

SMALL = {"dim": 8, "dim_mults": (1, 2), "resnet_block_groups": 4, "attn_heads": 2, "attn_dim_head": 8}


def tiny_stage(num_classes: int | None = None) -> SuperResolution:
    torch.manual_seed(0)
    net = Unet(**SMALL, cond_image_channels=3, cond_level=True, image_null=True, num_classes=num_classes)
    return SuperResolution(GaussianDiffusion(net, image_size=16, timesteps=10, sampling_timesteps=3), low_res_size=8)


def image_folder(path: Path, count: int = 6) -> Path:
    """``count`` 16x16 PNGs of a disc on a gradient, plus one file that is not an image."""
    path.mkdir()
    rows, cols = np.mgrid[0:16, 0:16]
    for i in range(count):
        image = np.stack([cols * 12 + 20 * i, rows * 10, np.full((16, 16), 90)], -1)
        image[(rows - 4 - i) ** 2 + (cols - 8) ** 2 < 16] = (230, 40, 40)
        Image.fromarray(image.clip(0, 255).astype("uint8")).save(path / f"img{i}.png")
    (path / "broken.png").write_bytes(b"not a png")
    return path


def test_a_stage_trains_from_a_folder_previews_its_input_and_rebuilds_from_its_checkpoint(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "images")
    trainer = make_trainer(tiny_stage(), folder, tmp_path / "r", on_bad_image="skip", num_samples=4)
    trainer.train()
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "loss.csv", "model-1.pt", "model-2.pt", "sample-1.png", "sample-2.png"
    ]  # fmt: skip
    assert any("broken.png" in path for path in trainer.skipped_images)

    checkpoint = load_checkpoint(tmp_path / "r" / "model-2.pt")
    assert checkpoint["network_path"] == "diffusion.model" and checkpoint["config"]["kind"] == "SuperResolution"
    rebuilt = load_pipeline(tmp_path / "r" / "model-2.pt", use_ema=False)
    assert type(rebuilt) is SuperResolution and rebuilt.low_res_size == (8, 8)
    for name, tensor in rebuilt.model.state_dict().items():
        assert torch.equal(tensor, trainer.trainable.model.state_dict()[name]), name

    # the grid: per row the low-resolution input (nearest), the output, the original (2 rows for 4 samples)
    grid = np.asarray(Image.open(tmp_path / "r" / "sample-2.png").convert("RGB")).astype(np.float32) / 255
    assert grid.shape == (2 + 2 * 18, 2 + 3 * 18, 3)
    dataset = ImageFolderDataset(folder, 16, on_bad_image="skip")
    first = dataset[0][None]
    shown = torch.nn.functional.interpolate(downsample(first, (8, 8)), size=(16, 16), mode="nearest")[0]
    np.testing.assert_allclose(grid[2:18, 2:18], shown.clamp(0, 1).permute(1, 2, 0).numpy(), atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(grid[2:18, 38:54], first[0].permute(1, 2, 0).numpy(), atol=1 / 255 + 1e-6)


def test_a_stage_resumes_exactly(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "images")
    make_trainer(tiny_stage(), folder, tmp_path / "a", on_bad_image="skip", num_samples=0).train()
    make_trainer(tiny_stage(), folder, tmp_path / "b", on_bad_image="skip", num_samples=0,
                 train_num_steps=2).train()  # fmt: skip
    resumed = make_trainer(tiny_stage(), folder, tmp_path / "b", on_bad_image="skip", num_samples=0, resume="auto")
    assert resumed.step == 2
    resumed.train()
    straight, again = (load_checkpoint(tmp_path / run / "model-2.pt") for run in ("a", "b"))
    for key in ("model", "ema", "opt", "step"):
        assert_identical(straight[key], again[key], key)


def test_mixed_precision_and_a_cascade_from_the_trainers_checkpoints(tmp_path: Path) -> None:
    """bf16 autocast on the CPU trains a stage (a finite loss). Then a class-conditional
    base and stage trained by the Trainer make a cascade from their checkpoints that samples by class name."""
    torch.manual_seed(0)
    pairs = [(torch.rand(3, 16, 16), i % 2) for i in range(8)]
    losses: list[float] = []
    make_trainer(tiny_stage(), [image for image, _ in pairs], tmp_path / "amp", amp=True, train_num_steps=1,
                 num_samples=0, log_fn=lambda row: losses.append(row["loss"])).train()  # fmt: skip
    assert len(losses) == 1 and np.isfinite(losses[0])
    reset_accelerate()  # one mixed-precision setting per process (accelerate)

    names = ["dark", "light"]
    base = GaussianDiffusion(Unet(**SMALL, num_classes=2), image_size=8, timesteps=10, sampling_timesteps=3,
                             class_names=names)  # fmt: skip
    small = [(downsample(image[None], (8, 8))[0], label) for image, label in pairs]
    make_trainer(base, small, tmp_path / "base", train_num_steps=2, num_samples=0).train()
    stage = tiny_stage(num_classes=2)
    stage.diffusion.class_names = names
    stage.diffusion.config["class_names"] = names
    make_trainer(stage, pairs, tmp_path / "stage", train_num_steps=2, num_samples=4).train()
    cascade = Cascade.from_checkpoints([tmp_path / "base" / "model-1.pt", tmp_path / "stage" / "model-1.pt"])
    out = cascade.sample(2, classes=["light", "dark"], generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 16) and bool(((out >= 0) & (out <= 1)).all())
