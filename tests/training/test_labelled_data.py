"""Labelled data: a folder with one sub-folder per class (LabelledImageFolder), and the built-in shapes with labels."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from trainer_helpers import isolated_accelerate, make_trainer, tiny_diffusion  # noqa: F401

from denoising_diffusion.data.batch import collate_batch
from denoising_diffusion.data.datasets import (
    BuiltinShapes,
    ImageFolderDataset,
    LabelledImageFolder,
    UnreadableImageError,
    get_builtin_dataset,
)
from denoising_diffusion.training.loader import (
    TrainingItems,
    as_training_dataset,
    collate_training_items,
    training_batches,
)

# Created in this order on purpose: sorted by name it is Zebra, apple, b_dog, cat (upper case sorts first, as in
# torchvision), which is neither the creation order nor a case-insensitive order.
COLOURS = {"cat": (10, 200, 10), "Zebra": (250, 250, 10), "apple": (230, 10, 10), "b_dog": (10, 10, 240)}
CLASSES = ["Zebra", "apple", "b_dog", "cat"]


def write_class_folder(root: Path) -> Path:
    """Each class's images are filled with its colour; one of cat's is nested two levels down; a note in the root
    and one in a class are not images."""
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (10 + i, 12), colour).save(root / name / f"{i}.png")
    (root / "cat" / "kittens" / "small").mkdir(parents=True)
    Image.new("RGB", (9, 9), COLOURS["cat"]).save(root / "cat" / "kittens" / "small" / "k.png")
    (root / "notes.txt").write_text("not an image")
    (root / "Zebra" / "source.csv").write_text("not an image either")
    return root


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    return write_class_folder(tmp_path / "classes")


def class_of_colour(image: torch.Tensor) -> str:
    """The class whose colour is nearest to the image's mean colour."""
    mean = image.mean(dim=(1, 2)) * 255
    return min(COLOURS, key=lambda name: float((mean - torch.tensor(COLOURS[name], dtype=torch.float32)).abs().sum()))


def test_labels_are_sorted_sub_folder_indices(class_folder: Path) -> None:
    dataset = LabelledImageFolder(class_folder, 8)
    assert dataset.classes == CLASSES
    assert dataset.class_to_idx == {name: i for i, name in enumerate(CLASSES)}
    assert len(dataset) == 9 and len(dataset.targets) == 9
    for i in range(len(dataset)):
        image, label = dataset[i]
        assert isinstance(label, int) and label == dataset.targets[i]
        assert image.shape == (3, 8, 8) and image.dtype == torch.float32
        assert class_of_colour(image) == dataset.classes[label]  # the label says what the image shows
        assert dataset.paths[i].relative_to(class_folder).parts[0] == dataset.classes[label]


def test_order_is_class_by_class_then_sorted_paths_and_deterministic(class_folder: Path) -> None:
    dataset = LabelledImageFolder(class_folder, 8)
    assert dataset.targets == sorted(dataset.targets)
    for label in range(len(CLASSES)):
        paths = [p for p, t in zip(dataset.paths, dataset.targets) if t == label]
        assert paths == sorted(paths)
    again = LabelledImageFolder(class_folder, 8)
    assert again.paths == dataset.paths and again.targets == dataset.targets


def test_labels_agree_with_torchvision_image_folder(class_folder: Path) -> None:
    ours = LabelledImageFolder(class_folder, 8)
    theirs = ImageFolder(class_folder)
    assert ours.classes == theirs.classes and ours.class_to_idx == theirs.class_to_idx
    assert {str(p): t for p, t in zip(ours.paths, ours.targets)} == dict(theirs.samples)


def test_nested_files_belong_to_their_class(class_folder: Path) -> None:
    dataset = LabelledImageFolder(class_folder, 8)
    index = [p.name for p in dataset.paths].index("k.png")
    image, label = dataset[index]
    assert dataset.classes[label] == "cat" and class_of_colour(image) == "cat"


def test_single_class_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "only" / "a.png")
    dataset = LabelledImageFolder(tmp_path, 8)
    assert dataset.classes == ["only"] and dataset[0][1] == 0


def test_options_are_those_of_image_folder_dataset(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    image = Image.new("L", (8, 8), 0)
    image.paste(255, (0, 0, 4, 8))  # left half white
    image.save(tmp_path / "a" / "half.png")
    dataset = LabelledImageFolder(tmp_path, (8, 8), channels=1, augment_horizontal_flip=True)
    torch.manual_seed(0)
    items = [dataset[0] for _ in range(20)]
    assert {image[0, 0, 0].item() for image, _ in items} == {0.0, 1.0} and {label for _, label in items} == {0}
    assert items[0][0].shape == (1, 8, 8)
    with pytest.raises(ValueError, match="unknown on_bad_image"):
        LabelledImageFolder(tmp_path, 8, on_bad_image="ignore")
    with pytest.raises(ValueError, match="channels"):
        LabelledImageFolder(tmp_path, 8, channels=2)


@pytest.mark.parametrize("cls", [ImageFolderDataset, LabelledImageFolder])
def test_index_out_of_range_is_an_index_error(class_folder: Path, cls: type) -> None:
    dataset = cls(class_folder, 8)
    n = len(dataset)
    for index in (n, -n - 1):
        with pytest.raises(IndexError, match=f"index {index} is out of range"):
            dataset[index]  # not silently another file (it used to wrap around)
    last = collate_batch([dataset[-1], dataset[n - 1]])  # -1 is the last item, as for a list
    images = last[0] if cls is LabelledImageFolder else last
    assert torch.equal(images[0], images[1])
    if cls is LabelledImageFolder:
        assert last[1].tolist() == [dataset.targets[-1]] * 2


# ----------------------------------------------------------------------------------------------------------------------
# Unreadable files: the replacement comes from the same class.


def test_skip_replaces_within_the_class(class_folder: Path) -> None:
    bad = class_folder / "apple" / "9_broken.png"  # apple's last file: the next file in order is b_dog's first
    bad.write_bytes(b"garbage")
    dataset = LabelledImageFolder(class_folder, 8, on_bad_image="skip")
    index = dataset.paths.index(bad)
    assert dataset.targets[index + 1] != dataset.targets[index]  # the trap is set
    (image, label), skipped = dataset.load(index)
    assert [Path(s.path).name for s in skipped] == ["9_broken.png"]
    assert dataset.classes[label] == "apple" and class_of_colour(image) == "apple"
    first_apple = dataset.targets.index(dataset.class_to_idx["apple"])
    assert torch.equal(image, dataset[first_apple][0])  # wrapped around to apple's first file
    (again, label), skipped = dataset.load(index)
    assert skipped == [] and torch.equal(again, image)  # met once, replaced the same way


def test_skip_in_the_middle_of_a_class_serves_the_next_file_of_it(class_folder: Path) -> None:
    bad = class_folder / "cat" / "0_broken.png"
    bad.write_bytes(b"")
    dataset = LabelledImageFolder(class_folder, 8, on_bad_image="skip")
    index = dataset.paths.index(bad)
    image, label = dataset[index]
    assert dataset.classes[label] == "cat" and torch.equal(image, dataset[index + 1][0])


def test_error_names_the_file(class_folder: Path) -> None:
    bad = class_folder / "b_dog" / "broken.png"
    bad.write_bytes(b"garbage")
    dataset = LabelledImageFolder(class_folder, 8)
    with pytest.raises(UnreadableImageError, match=r"broken\.png.*on_bad_image='skip'"):
        dataset[dataset.paths.index(bad)]


def test_a_class_without_a_readable_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "ruined").mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "good" / "a.png")
    (tmp_path / "ruined" / "a.png").write_bytes(b"nope")
    (tmp_path / "ruined" / "b.png").write_bytes(b"")
    dataset = LabelledImageFolder(tmp_path, 8, on_bad_image="skip")
    assert dataset[0][1] == 0
    with pytest.raises(UnreadableImageError, match=r"none of the 2 image files of class 'ruined'"):
        dataset[1]  # not a good-class image under the ruined label


# ----------------------------------------------------------------------------------------------------------------------
# Folders that are not labelled folders.


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        LabelledImageFolder(tmp_path / "nowhere", 8)


@pytest.mark.parametrize("loose", [0, 3])
def test_no_sub_folders(tmp_path: Path, loose: int) -> None:
    for i in range(loose):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    with pytest.raises(ValueError, match="has no sub-folders") as info:
        LabelledImageFolder(tmp_path, 8)
    assert repr(str(tmp_path)) in str(info.value)
    assert ("3 image file(s) directly, for which use ImageFolderDataset" in str(info.value)) == bool(loose)


def test_images_in_the_root_belong_to_no_class(class_folder: Path) -> None:
    Image.new("RGB", (8, 8)).save(class_folder / "stray.png")
    Image.new("RGB", (8, 8)).save(class_folder / "stray2.JPG")
    with pytest.raises(ValueError, match=r"holds 2 image file\(s\) directly \(e\.g\. 'stray\.png'\)") as info:
        LabelledImageFolder(class_folder, 8)
    assert repr(str(class_folder)) in str(info.value) and "belong to no class" in str(info.value)


def test_a_sub_folder_without_images_is_named(class_folder: Path) -> None:
    (class_folder / "empty").mkdir()
    (class_folder / "texts").mkdir()
    (class_folder / "texts" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder 'empty' .* \(and 1 other class folder\(s\)\) holds no images"):
        LabelledImageFolder(class_folder, 8)


# ----------------------------------------------------------------------------------------------------------------------
# The Trainer's data path.


def test_the_trainers_loader_batches_images_and_int64_labels(class_folder: Path) -> None:
    bad = class_folder / "apple" / "9_broken.png"
    bad.write_bytes(b"garbage")
    dataset = LabelledImageFolder(class_folder, 8, on_bad_image="skip")
    assert as_training_dataset(dataset, 3, (8, 8), dataset.on_bad_image) is dataset
    items = TrainingItems(dataset, data_seed=0)
    keys = list(enumerate(range(len(dataset))))
    batch, skipped = collate_training_items([items[key] for key in keys])
    images, labels = batch
    assert images.shape == (len(dataset), 3, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (len(dataset),) and labels.dtype == torch.int64
    assert labels.tolist() == dataset.targets
    assert [class_of_colour(image) for image in images] == [dataset.classes[t] for t in dataset.targets]
    assert [Path(s.path).name for s in skipped] == ["9_broken.png"]  # reported to the Trainer, not lost


def test_training_batches_carry_labels_through_the_data_loader(class_folder: Path) -> None:
    dataset = LabelledImageFolder(class_folder, 8)
    stream = training_batches(dataset, 6, seed=1, start_index=0, shard=0, num_shards=1, num_workers=0, pin_memory=False)
    for _ in range(3):
        (images, labels), _ = next(stream)
        assert images.shape == (6, 3, 8, 8) and labels.dtype == torch.int64
        assert [class_of_colour(image) for image in images] == [dataset.classes[t] for t in labels.tolist()]


@pytest.mark.filterwarnings("ignore:this GaussianDiffusion takes no condition")  # an unconditional model drops labels
def test_the_trainer_trains_on_a_labelled_folder_and_counts_its_skipped_files(
    class_folder: Path, tmp_path: Path, caplog
) -> None:
    (class_folder / "apple" / "9_broken.png").write_bytes(b"garbage")
    dataset = LabelledImageFolder(class_folder, 8, on_bad_image="skip")
    trainer = make_trainer(
        tiny_diffusion(), dataset, tmp_path / "r", train_batch_size=5, train_num_steps=4, save_and_sample_every=4
    )
    with caplog.at_level(logging.WARNING):
        trainer.train()  # 20 items: every file is read at least once
    assert [Path(p).name for p in trainer.skipped_images] == ["9_broken.png"]
    assert (tmp_path / "r" / "model-1.pt").exists()


# ----------------------------------------------------------------------------------------------------------------------
# The built-in shapes, labelled.

# sha256 of BuiltinShapes(64, 16, channels=3, seed=0).images as float32 bytes, computed before labels existed: the
# unlabelled images must never change (same seed, same images, every release).
SHAPES_SHA256 = "31094a2b54ab3f3350bf3b1beca399305602c7b689143c02f5e7a73a27c3a3e5"


def test_unlabelled_shapes_are_unchanged_bit_for_bit() -> None:
    dataset = BuiltinShapes(64, 16, channels=3, seed=0)
    assert hashlib.sha256(dataset.images.numpy().tobytes()).hexdigest() == SHAPES_SHA256
    assert isinstance(dataset[0], torch.Tensor) and dataset[0].shape == (3, 16, 16)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_labelled_shapes_have_the_same_images_and_deterministic_labels(channels: int) -> None:
    plain = BuiltinShapes(64, (12, 16), channels=channels, seed=5)
    labelled = BuiltinShapes(64, (12, 16), channels=channels, seed=5, labelled=True)
    assert torch.equal(plain.images, labelled.images)
    assert torch.equal(labelled.labels, BuiltinShapes(64, (12, 16), channels, seed=5, labelled=True).labels)
    assert not torch.equal(labelled.labels, BuiltinShapes(64, (12, 16), channels, seed=6, labelled=True).labels)
    image, label = labelled[3]
    assert torch.equal(image, plain[3]) and isinstance(label, int) and label == int(labelled.labels[3])
    assert labelled.labels.dtype == torch.int64 and set(labelled.labels.tolist()) <= set(range(8))


def test_shape_classes() -> None:
    dataset = BuiltinShapes(8, 16, labelled=True)
    assert dataset.classes == [
        "red disc",
        "green disc",
        "blue disc",
        "yellow disc",
        "red square",
        "green square",
        "blue square",
        "yellow square",
    ]
    assert dataset.class_to_idx["blue square"] == 6
    dataset.classes.append("mutated")  # each dataset owns its lists
    assert len(BuiltinShapes(8, 16).classes) == 8


SHAPE_RGB = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.15, 0.30, 0.90),
    "yellow": (0.95, 0.85, 0.10),
}


def drawn_class(image: torch.Tensor) -> str:
    """What an image shows, read from its pixels: the colour nearest to the shape's, and disc or square from how
    much of the shape's bounding box it fills (pi/4 for a disc, 1 for a square)."""
    background = torch.tensor([0.95, 0.95, 0.95]).view(3, 1, 1)
    inside = (image - background).abs().sum(dim=0) > 0.3  # (H, W): well inside the shape
    rows, cols = inside.any(dim=1).nonzero(), inside.any(dim=0).nonzero()
    box = (int(rows[-1]) - int(rows[0]) + 1) * (int(cols[-1]) - int(cols[0]) + 1)
    shape = "square" if inside.sum().item() / box > 0.9 else "disc"
    mean = image[:, inside].mean(dim=1)
    colour = min(SHAPE_RGB, key=lambda c: float((mean - torch.tensor(SHAPE_RGB[c])).abs().sum()))
    return f"{colour} {shape}"


def test_shape_labels_say_what_is_drawn() -> None:
    dataset = get_builtin_dataset("shapes", 32, num_images=200, seed=11, labelled=True)
    assert isinstance(dataset, BuiltinShapes)
    item = dataset[0]
    assert isinstance(item, tuple) and item[1] == int(dataset.labels[0])
    shown = [drawn_class(dataset.images[i]) for i in range(len(dataset))]
    assert shown == [dataset.classes[int(t)] for t in dataset.labels]
    assert set(dataset.labels.tolist()) == set(range(8))  # every class occurs


def test_labelled_shapes_collate_to_int64_labels() -> None:
    dataset = BuiltinShapes(16, 16, labelled=True)
    items = TrainingItems(dataset, data_seed=0)
    (images, labels), skipped = collate_training_items([items[(i, i)] for i in range(16)])
    assert images.shape == (16, 3, 16, 16) and labels.dtype == torch.int64 and skipped == []
    assert torch.equal(labels, dataset.labels)
