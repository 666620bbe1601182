"""Every example runs in --smoke mode, in-process, and writes the files its docstring promises. Nothing downloads."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from PIL import Image

from denoising_diffusion import get_builtin_dataset, save_image_grid

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    """Import examples/<name>.py as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def _reset_accelerate() -> None:
    # accelerate keeps one process-wide state and refuses a second mixed-precision setting (the tutorial trainer
    # uses amp=True, the MNIST example amp=False); each test needs a fresh one, as in test_trainer.py.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # a default ./results or ./data would land here, not in the repository
    torch.manual_seed(0)
    _reset_accelerate()
    yield
    _reset_accelerate()


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Ten 20x20 RGB PNGs of coloured shapes."""
    folder = tmp_path / "images"
    dataset = get_builtin_dataset("shapes", image_size=20, num_images=10, seed=3)
    for i in range(len(dataset)):
        save_image_grid(dataset[i].unsqueeze(0), folder / f"{i}.png", padding=0)
    return folder


def grid_side(n: int, side: int, padding: int = 2) -> int:
    """Width of a torchvision grid of n images per row, each ``side`` pixels, with ``padding``."""
    return n * (side + padding) + padding


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def loss_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def source_lines(name: str) -> list[str]:
    return [line.strip() for line in (EXAMPLES / f"{name}.py").read_text().splitlines()]


def assert_lines_in_order(lines: list[str], expected: list[str]) -> None:
    position = 0
    for line in expected:
        assert line in lines[position:], f"missing (or out of order): {line!r}"
        position = lines.index(line, position) + 1


# ----- tutorial_quickstart -------------------------------------------------------------------------------------------

TUTORIAL_SNIPPET = """\
import torch
from denoising_diffusion import Unet, GaussianDiffusion, Trainer
model = Unet(dim = 64, dim_mults = (1, 2, 4, 8))
diffusion = GaussianDiffusion(model, image_size = 128, timesteps = 1000, loss_type = 'l1')
training_images = torch.rand(8, 3, 128, 128) # images are normalized from 0 to 1
loss = diffusion(training_images)
loss.backward()
sampled_images = diffusion.sample(batch_size = 4)
sampled_images.shape # (4, 3, 128, 128)
"""


def test_quickstart_holds_the_tutorial_snippet_verbatim() -> None:
    assert_lines_in_order(source_lines("tutorial_quickstart"), TUTORIAL_SNIPPET.splitlines())


def test_the_readme_quotes_the_tutorial_verbatim() -> None:
    """A formatter once rewrote the README's code blocks (``dim = 64`` -> ``dim=64``): the quote must stay exact."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    assert TUTORIAL_SNIPPET in readme
    assert (
        "model = Unet(dim = 64, dim_mults = (1, 2, 4, 8))\ndiffusion = GaussianDiffusion(model, image_size = 128, "
        "timesteps = 1000, sampling_timesteps = 250, loss_type = 'l1')" in readme
    )


def test_quickstart_smoke(tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = load_example("tutorial_quickstart").main(["--smoke", "--out", str(out)])
    assert path == out / "samples.png"
    assert image_size(path) == (grid_side(2, 16), grid_side(2, 16))  # 4 samples of 16x16, two per row


# ----- tutorial_trainer ----------------------------------------------------------------------------------------------


def test_tutorial_trainer_holds_the_tutorial_calls() -> None:
    assert_lines_in_order(
        source_lines("tutorial_trainer"),
        [
            "model = Unet(dim = 64, dim_mults = (1, 2, 4, 8))",
            "diffusion = GaussianDiffusion(model, image_size = 128, timesteps = 1000, sampling_timesteps = 250, "
            "loss_type = 'l1')",
            "trainer = Trainer(diffusion, folder, train_batch_size = 32, train_lr = 8e-5, train_num_steps = 700000, "
            "gradient_accumulate_every = 2, ema_decay = 0.995, amp = True, results_folder = out)",
            "trainer.train()",
        ],
    )


def assert_trainer_outputs(out: Path, steps: int, milestones: int) -> None:
    for m in range(1, milestones + 1):
        assert (out / f"model-{m}.pt").is_file() and (out / f"sample-{m}.png").is_file()
    assert [int(row["step"]) for row in loss_rows(out / "loss.csv")] == list(range(1, steps + 1))


def test_tutorial_trainer_smoke_on_a_folder(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    trainer = load_example("tutorial_trainer").main([str(image_folder), "--smoke", "--out", str(out)])
    assert trainer.step == 4 and trainer.accelerator.mixed_precision == "bf16"  # amp = True: bf16 on a CPU
    assert_trainer_outputs(out, steps=4, milestones=2)


def test_tutorial_trainer_smoke_generates_its_own_images(tmp_path: Path) -> None:
    out = tmp_path / "out"
    load_example("tutorial_trainer").main(["--smoke", "--out", str(out)])
    assert_trainer_outputs(out, steps=4, milestones=2)


def test_tutorial_trainer_full_settings_construct(image_folder: Path, tmp_path: Path) -> None:
    trainer = load_example("tutorial_trainer").build_trainer(image_folder, tmp_path / "out", smoke=False)
    assert trainer.train_num_steps == 700000 and trainer.train_batch_size == 32
    assert trainer.accelerator.gradient_accumulation_steps == 2 and trainer.diffusion.sampling_timesteps == 250
    assert trainer.diffusion.image_size == (128, 128) and (tmp_path / "out").is_dir()


def test_tutorial_trainer_needs_a_folder_outside_smoke_mode() -> None:
    with pytest.raises(SystemExit):
        load_example("tutorial_trainer").main([])


# ----- custom_training_loop ------------------------------------------------------------------------------------------


def test_custom_training_loop_smoke(tmp_path: Path) -> None:
    out = tmp_path / "out"
    paths = load_example("custom_training_loop").main(["--smoke", "--out", str(out)])
    assert paths == {"samples": out / "samples.png", "progress": out / "progress.png", "loss": out / "loss.csv"}
    assert image_size(out / "samples.png") == (grid_side(2, 16), grid_side(2, 16))  # 4 samples
    # progress: one row per sample (4), one column per kept step (all 5 of a 5-step run)
    assert image_size(out / "progress.png") == (grid_side(5, 16), grid_side(4, 16))
    rows = loss_rows(out / "loss.csv")
    assert len(rows) == 5 and all(float(row["loss"]) > 0 for row in rows)


def test_custom_training_loop_smoke_on_a_folder(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    load_example("custom_training_loop").main(
        ["--smoke", "--data", str(image_folder), "--image-size", "8", "--out", str(out)]
    )
    assert image_size(out / "samples.png") == (grid_side(2, 8), grid_side(2, 8))


# ----- train_mnist_gif -----------------------------------------------------------------------------------------------


def assert_gif(path: Path, side: int, upscale: int) -> None:
    """A looping GIF of a 3x3 grid of side x side images (magnified by ``upscale``), with several frames."""
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames >= 5
        assert gif.size == (grid_side(3, side * upscale), grid_side(3, side * upscale))


def test_train_mnist_gif_smoke_on_a_folder_then_from_the_checkpoint(image_folder: Path, tmp_path: Path) -> None:
    example = load_example("train_mnist_gif")
    out = tmp_path / "out"
    paths = example.main(["--smoke", "--data", str(image_folder), "--out", str(out)])
    assert paths["checkpoint"] == out / "model-1.pt" and paths["checkpoint"].is_file()
    assert (out / "sample-1.png").is_file() and len(loss_rows(out / "loss.csv")) == 2
    assert_gif(out / "denoising.gif", side=16, upscale=4)  # 16x16 images are shown 4x larger
    assert image_size(out / "final-samples.png") == (grid_side(3, 16), grid_side(3, 16))

    again = tmp_path / "again"  # --checkpoint: no training, the GIF from the saved EMA network
    example.main(
        ["--checkpoint", str(paths["checkpoint"]), "--sampler", "ddim", "--sample-steps", "5", "--out", str(again)]
    )
    assert sorted(p.name for p in again.iterdir()) == ["denoising.gif", "final-samples.png"]
    with Image.open(again / "denoising.gif") as gif:
        assert gif.n_frames == 6  # x_T and 5 DDIM steps


def test_train_mnist_gif_smoke_without_data_uses_generated_images(tmp_path: Path) -> None:
    out = tmp_path / "out"
    load_example("train_mnist_gif").main(["--smoke", "--out", str(out)])
    assert_gif(out / "denoising.gif", side=16, upscale=4)
    assert not (tmp_path / "data").exists()  # nothing was downloaded


def write_fake_mnist(root: Path, n: int = 12) -> None:
    """MNIST's four raw IDX files, with n random 28x28 images each, where torchvision looks for them."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    image_bytes = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)) + images.numpy().tobytes()
    label_bytes = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(range(n))
    for split in ("train", "t10k"):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(image_bytes)
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(label_bytes)


def test_train_mnist_gif_torchvision_path_at_28x28(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def no_download(self) -> None:  # MNIST.download returns early when the files are there; never fetch
        if not self._check_exists():
            raise AssertionError("the test tried to download")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", no_download)
    write_fake_mnist(tmp_path / "data")
    example = load_example("train_mnist_gif")
    item = example.torchvision_dataset("mnist", tmp_path / "data")[0]
    assert item.shape == (1, 28, 28) and item.dtype == torch.float32 and 0 <= item.min() <= item.max() <= 1

    out = tmp_path / "out"
    example.main(["--smoke", "--dataset", "mnist", "--data-root", str(tmp_path / "data"), "--out", str(out)])
    assert_gif(out / "denoising.gif", side=28, upscale=3)  # 28x28 digits stay 28x28, shown 3x larger
    assert image_size(out / "final-samples.png") == (grid_side(3, 28), grid_side(3, 28))


def test_28x28_fits_the_mnist_unet() -> None:
    from denoising_diffusion import Unet

    presets = load_example("train_mnist_gif").PRESETS
    for preset in presets.values():
        unet = Unet(8, dim_mults=preset.dim_mults, channels=preset.channels)
        unet.check_image_size(preset.image_size, preset.image_size)  # raises if the side is not divisible
    with pytest.raises(ValueError, match="not divisible"):
        Unet(8, dim_mults=(1, 2, 4, 8)).check_image_size(28, 28)
