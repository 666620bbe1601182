"""The tutorial's data sets by name (data/named.py), from files in their own formats written by the test: read as
torchvision reads them, with their labels, offline errors that say where the files go, and the command line
training a class-conditional model on each, with the denoising GIF and a validation loss."""

from __future__ import annotations

import csv
import pickle
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.datasets
from dataset_files import index_of, label_of, write_cifar, write_mnist
from trainer_helpers import isolated_accelerate, make_trainer  # noqa: F401 (autouse fixture)

from denoising_diffusion.checkpoint import load_checkpoint
from denoising_diffusion.cli import build_parser, main, resolve_train_options
from denoising_diffusion.cli.presets import ema_decay_for, steps_for_epochs
from denoising_diffusion.data.named import (
    DATA_ROOT_ENV,
    DatasetNotFoundError,
    default_data_root,
    get_dataset,
    named_dataset,
)
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.nn.unet import Unet

WRITERS = {
    "mnist": lambda root: write_mnist(root, "MNIST"),
    "fashion-mnist": lambda root: write_mnist(root, "FashionMNIST"),
    "cifar10": write_cifar,
}
TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}


@pytest.mark.parametrize("name", list(WRITERS))
@pytest.mark.parametrize("train", [True, False])
def test_named_sets_read_what_torchvision_reads(name: str, train: bool, tmp_path: Path, monkeypatch) -> None:
    """Same pixels, labels and order as torchvision's own class on the same files (its CIFAR-10 checks the
    files' MD5 against the real data set's, so that check alone is switched off for the test's files)."""
    WRITERS[name](tmp_path)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    theirs = getattr(torchvision.datasets, TORCHVISION[name])(str(tmp_path), train=train, download=False)
    ours = get_dataset(name, tmp_path, train=train, download=False)
    pixels = torch.as_tensor(theirs.data)  # (N, H, W) for MNIST, (N, H, W, C) for CIFAR
    pixels = pixels[:, None] if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2)
    assert len(ours) == len(theirs) and ours.targets.tolist() == list(map(int, theirs.targets))
    assert torch.equal(torch.stack([ours[i][0] for i in range(len(ours))]), pixels.float() / 255)
    image, label = ours[3]
    assert label == label_of(image) and index_of(image) == (3 if train else 103)


def test_gz_copies_and_another_image_size(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=True)
    data = get_dataset("MNIST", tmp_path, download=False, labelled=False, image_size=16)
    assert data[0].shape == (1, 16, 16) and data.classes == list("0123456789")


def test_the_data_root_defaults_to_the_environment_then_the_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "mine"))
    assert default_data_root() == tmp_path / "mine"
    monkeypatch.delenv(DATA_ROOT_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_root() == tmp_path / "cache" / "denoising_diffusion" / "datasets"


def test_an_unknown_name_lists_the_known_ones(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="unknown data set 'mnsit'; the named data sets are: mnist, fashion-mnist, "):
        get_dataset("mnsit", tmp_path)
    assert main(["train", "--dataset", "cifar100", "--results", str(tmp_path / "r")]) == 2
    assert "the named data sets are: mnist, fashion-mnist, cifar10; or hf:NAME_OR_PATH" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("download", [False, True])
def test_missing_files_offline_say_exactly_where_to_put_them(download: bool, tmp_path: Path, monkeypatch) -> None:
    """Without the files (and, with download=True, with torchvision's download failing as offline): one error
    naming each file's exact path, in torchvision's layout, and where to get it."""

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets.utils, "urlopen", offline, raising=False)
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", lambda self: offline())
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", lambda self: offline())
    with pytest.raises(DatasetNotFoundError) as mnist:
        get_dataset("mnist", tmp_path, download=download)
    raw = tmp_path / "MNIST" / "raw"
    assert f"'{raw / 'train-images-idx3-ubyte'}' '{raw / 'train-labels-idx1-ubyte'}'" in str(mnist.value)
    assert ("Name or service not known" in str(mnist.value)) == download
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py/test_batch'; from https://www.cs.toronto"):
        get_dataset("cifar10", tmp_path, train=False, download=download)


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path: Path) -> None:
    """torchvision unpickles CIFAR batches; here a batch naming any class but numpy's arrays is refused."""
    write_cifar(tmp_path)
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": Exploit(), "labels": []}))
    with pytest.raises(ValueError, match="test_batch' is not a CIFAR batch file that can be read safely: it names"):
        get_dataset("cifar10", tmp_path, train=False)
    assert not marker.exists()


def test_labels_reach_a_class_conditional_model(tmp_path: Path, monkeypatch) -> None:
    """Each batch's labels arrive at the network as its `classes`, equal to the labels coded into its images."""
    write_mnist(tmp_path / "data", train=16)
    unet = Unet(8, dim_mults=(1, 2), channels=1, num_classes=10, cond_drop_prob=0.0, resnet_block_groups=4)
    diffusion = GaussianDiffusion(unet, image_size=28, timesteps=10)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    forward = unet.forward

    def spy(x, t, *args, classes=None, **kwargs):
        seen.append((x.shape[0], classes.clone()))
        return forward(x, t, *args, classes=classes, **kwargs)

    batches: list[torch.Tensor] = []
    diffusion_forward = diffusion.forward
    monkeypatch.setattr(diffusion, "forward", lambda batch, *a, **k: batches.append(batch) or diffusion_forward(
        batch, *a, **k))  # fmt: skip
    monkeypatch.setattr(unet, "forward", spy)
    data = get_dataset("mnist", tmp_path / "data", download=False)
    make_trainer(
        diffusion, data, tmp_path / "r", train_num_steps=2, num_samples=0, augment_horizontal_flip=False
    ).train()
    assert len(batches) == 2 and [n for n, _ in seen] == [4, 4]
    for (images, labels), (_, classes) in zip(batches, seen):
        assert classes.tolist() == labels.tolist() == [label_of(image) for image in images]


@pytest.mark.parametrize(
    "epochs,items,batch,accum,steps", [(1, 12, 4, 1, 3), (2, 10, 3, 2, 4), (1, 60000, 128, 1, 469)]
)
def test_epochs_are_items_over_the_images_per_optimizer_step(epochs, items, batch, accum, steps) -> None:
    """steps = ceil(epochs · items / (batch · grad accum)): 2 · 10 / 6 = 3.33 -> 4."""
    assert steps_for_epochs(epochs, items, batch, accum) == steps


@pytest.mark.parametrize("name", list(WRITERS))
def test_each_named_preset_fits_its_images(name: str) -> None:
    """The preset's size is the data's own and its levels divide it (28 px: three levels, since 28 / 8 is not an
    integer); digits are not flipped; a Unet of that layout runs at that size."""
    spec = named_dataset(name)
    preset = resolve_train_options(build_parser().parse_args(["train", "--dataset", name]))
    levels = len(preset.dim_mults)
    assert (preset.image_size, preset.channels) == (spec.image_size, spec.channels)
    assert preset.image_size % 2 ** (levels - 1) == 0 and (levels == 4 or preset.image_size % 2**levels != 0)
    assert preset.flip == (name != "mnist") and preset.gif
    unet = Unet(8, dim_mults=preset.dim_mults, channels=preset.channels, resnet_block_groups=4)
    x = torch.rand(1, preset.channels, preset.image_size, preset.image_size)
    assert unet(x, torch.zeros(1, dtype=torch.long)).shape == x.shape


@pytest.mark.parametrize("name", list(WRITERS))
def test_train_each_named_set_class_conditional_with_gif_and_validation(name: str, tmp_path: Path, capsys) -> None:
    """`train --dataset NAME --class-cond --validation test` on the test's files: the class names reach the
    checkpoint, the GIF is written, and validation.csv holds the loss at each milestone."""
    WRITERS[name](tmp_path / "data")
    results = tmp_path / "results"
    argv = ["train", "--dataset", name, "--data-root", str(tmp_path / "data"), "--no-download", "--class-cond",
            "--validation", "test", "--validation-num", "3", "--dim", "8", "--dim-mults", "1,2", "--timesteps", "4",
            "--attention", "none", "--no-mid-attn",
            "--batch-size", "4", "--epochs", "1", "--save-every", "2", "--num-samples", "10", "--seed", "0",
            "--results", str(results), "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 epoch(s) of" in out and "steps" in out
    steps = 3  # ceil(12 / 4) for MNIST's 12 training images, ceil(10 / 4) for CIFAR-10's 5 batches of 2
    checkpoint = load_checkpoint(results / "model-2.pt")
    assert checkpoint["step"] == steps and len(checkpoint["config"]["class_names"]) == 10
    assert checkpoint["trainer"]["options"]["ema_decay"] == ema_decay_for(steps)  # sized to the epochs' steps
    assert (results / "denoising.gif").stat().st_size > 0
    with open(results / "validation.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["name"] == "val_loss"]
    assert [int(row["step"]) for row in rows] == [2, steps]
