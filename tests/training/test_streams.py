"""Data at scale (data/streams.py, shards.py, hf.py; training/streamed.py): local WebDataset shards and local
Hugging Face datasets written by the test stream, split across two simulated processes with no record read twice
in an epoch, resume exactly (the stream alone, the DataStream's per-process positions, and the Trainer's losses),
and bad input is one clear error."""

from __future__ import annotations

import csv
import io
import logging
import tarfile
from pathlib import Path

import pytest
import torch
from dataset_files import hf_dataset_of, index_of, label_of, save_hf, write_parquet, write_shards
from trainer_helpers import (  # noqa: F401 (isolated_accelerate: autouse fixture)
    isolated_accelerate,
    make_trainer,
    read_loss_log,
    reset_accelerate,
    tiny_diffusion,
)

from denoising_diffusion.checkpoint import load_checkpoint
from denoising_diffusion.cli import main
from denoising_diffusion.data.hf import HFImages, HFStream, hf_dataset
from denoising_diffusion.data.records import RecordError
from denoising_diffusion.data.shards import ShardStream
from denoising_diffusion.data.streams import StreamPosition, epoch_shards, stream_records
from denoising_diffusion.training import loader
from denoising_diffusion.training.loader import DataStream
from denoising_diffusion.training.streamed import stream_batches


def shards(tmp_path: Path, sizes: list[int], **options) -> ShardStream:
    write_shards(tmp_path / "shards", sizes)
    return ShardStream(str(tmp_path / "shards" / "*.tar"), 8, 3, **options)


STREAMS = {  # name -> (make the stream in a folder, the record numbers it holds)
    "shards, uneven": (lambda tmp: shards(tmp, [3, 5, 4], window=3), range(12)),
    "one shard, two processes": (lambda tmp: shards(tmp, [7], window=2), range(7)),
    "parquet files": (
        lambda tmp: hf_dataset(str(write_parquet(tmp / "pq", [4, 4, 3])), 8, streaming=True, window=3),
        range(11),
    ),
    "saved folder": (lambda tmp: hf_dataset(str(save_hf(tmp / "hf", 9)), 8, streaming=True, window=4), range(9)),
}


def epoch_numbers(stream, rank: int, world: int, epoch: int = 0) -> list[int]:
    """The record numbers process ``rank`` reads in ``epoch`` (a record belongs to the epoch of the position after
    it, except the first record of the next epoch, whose position says that epoch already)."""
    found = []
    for record, after in stream_records(stream, seed=3, rank=rank, world=world):
        if after.epoch > epoch:
            break
        if after.epoch == epoch:
            found.append(index_of(stream.decode(record)[0]))
    return found


def test_each_epoch_permutes_the_shards_and_deals_them_out() -> None:
    """Epoch e's shard order is a permutation seeded by (seed, e), another one each epoch, and process r of n takes
    its r-th, (r + n)-th, ... shards; with fewer shards than processes each reads all of them, strided."""
    orders = [epoch_shards(8, seed=5, epoch=e, rank=0, world=1)[0] for e in range(3)]
    assert all(sorted(order) == list(range(8)) for order in orders) and len({tuple(o) for o in orders}) == 3
    assert [epoch_shards(8, seed=5, epoch=2, rank=r, world=3) for r in range(3)] == [
        (orders[2][r::3], False) for r in range(3)
    ]
    assert epoch_shards(1, seed=5, epoch=0, rank=1, world=2) == ([0], True)


@pytest.mark.parametrize("kind", list(STREAMS))
def test_two_processes_read_an_epoch_without_duplicates(kind: str, tmp_path: Path) -> None:
    make, held = STREAMS[kind]
    stream = make(tmp_path)
    first, second = epoch_numbers(stream, 0, 2), epoch_numbers(stream, 1, 2)
    assert first and second and not set(first) & set(second)
    assert sorted(first + second) == list(held)
    alone = epoch_numbers(stream, 0, 1)
    assert sorted(alone) == list(held) and alone != epoch_numbers(stream, 0, 1, epoch=1)  # reshuffled each epoch


@pytest.mark.parametrize("kind", list(STREAMS))
def test_a_stream_resumes_exactly_from_any_position(kind: str, tmp_path: Path) -> None:
    """The records after a saved position are those an uninterrupted reader yields next, across windows, shards
    and epochs."""
    stream = STREAMS[kind][0](tmp_path)
    records = stream_records(stream, seed=3, rank=1, world=2)
    steps = [next(records) for _ in range(30)]
    expected = [index_of(stream.decode(record)[0]) for record, _ in steps]
    for k in (1, 2, 3, 5, 8, 13, 21):
        resumed = stream_records(stream, seed=3, rank=1, world=2, start=steps[k - 1][1])
        assert [index_of(stream.decode(next(resumed)[0])[0]) for _ in range(9)] == expected[k : k + 9], k


def test_each_process_saves_and_resumes_its_own_position(tmp_path: Path, monkeypatch, caplog) -> None:
    """Two DataStreams as the two processes of one run: the checkpoint holds both positions (gathered), and each
    process resumes its own; a run with another process count restarts the earliest epoch, with a warning."""
    stream = shards(tmp_path, [3, 5, 4, 2], window=3)
    runs = [DataStream(stream, 4, data_seed=1, shard=r, num_shards=2, num_workers=0, pin_memory=False) for r in (0, 1)]
    seen = [[index_of(image) for _ in range(3) for image in run.next()[0]] for run in runs]  # 6 of 14: epoch 0
    assert not set(seen[0]) & set(seen[1])
    for run in runs:
        run.next(), run.next()  # 10 records each: both processes in epoch 1 (each holds 5 to 9 of the 14)
    monkeypatch.setattr(loader, "_gather", lambda value, n: [run.position.as_dict() for run in runs])
    state = runs[0].state_dict()
    assert [StreamPosition.from_dict(p) for p in state["stream_positions"]] == [run.position for run in runs]
    for rank, run in enumerate(runs):
        resumed = DataStream(stream, 4, data_seed=0, shard=rank, num_shards=2, num_workers=0, pin_memory=False)
        resumed.load_state_dict(state)
        assert all(torch.equal(resumed.next()[0], run.next()[0]) for _ in range(4))
    alone = DataStream(stream, 4, data_seed=0, shard=0, num_shards=1, num_workers=0, pin_memory=False)
    with caplog.at_level(logging.WARNING):
        alone.load_state_dict(state)
    assert alone.position == StreamPosition(epoch=1)
    assert "written by 2 process(es), this run has 1" in caplog.text


def test_workers_read_ahead_without_moving_the_position(tmp_path: Path) -> None:
    """With DataLoader workers decoding (and reading batches ahead), the batches and the position each consumed
    batch carries are those of reading in the main process."""
    stream = shards(tmp_path, [5, 6, 4], window=4)
    runs = [DataStream(stream, 4, data_seed=1, shard=0, num_shards=1, num_workers=w, pin_memory=False) for w in (0, 2)]
    for _ in range(5):
        batches = [run.next()[0] for run in runs]
        assert torch.equal(*batches) and runs[0].position == runs[1].position


def test_the_trainer_resumes_a_stream_exactly(tmp_path: Path) -> None:
    """4 steps at once and 2 + 2 across a resume log the same losses (the stream position is in the checkpoint)."""
    write_shards(tmp_path / "shards", [5, 6, 4])

    def run(results: Path, steps: int, **options):
        stream = ShardStream(str(tmp_path / "shards" / "*.tar"), 8, 3, window=4)
        torch.manual_seed(0)
        make_trainer(tiny_diffusion(), stream, results, train_num_steps=steps, num_samples=0, **options).train()
        return [row["loss"] for row in read_loss_log(results / "loss.csv")]

    whole = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    reset_accelerate()
    assert run(tmp_path / "b", 4, resume="auto") == whole
    positions = load_checkpoint(tmp_path / "b" / "model-2.pt")["trainer"]["stream_positions"]
    assert len(positions) == 1 and positions[0]["epoch"] >= 0


def test_a_bad_record_is_skipped_and_named_or_stops(tmp_path: Path) -> None:
    write_shards(tmp_path / "s", [4])
    with tarfile.open(tmp_path / "s" / "shard-001.tar", "w") as tar:  # read after shard-000's 4 (window 1)
        info = tarfile.TarInfo("bad.png")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"nopng"))
    options = dict(seed=0, rank=0, world=1, start=StreamPosition(), num_workers=0, pin_memory=False)
    stream = ShardStream(str(tmp_path / "s" / "*.tar"), 8, 3, window=1, on_bad_image="skip")
    batch, skipped, _ = next(stream_batches(stream, 5, **options))
    assert batch.shape[0] == 4 and len(skipped) == 1 and "sample 'bad' of shard" in skipped[0].path
    strict = ShardStream(str(tmp_path / "s" / "*.tar"), 8, 3, window=1)
    with pytest.raises(OSError, match="cannot read image file 'png' of sample 'bad' of shard"):
        next(stream_batches(strict, 5, **options))


def test_hugging_face_folders_load_map_style_with_their_class_names(tmp_path: Path) -> None:
    data = hf_dataset(str(save_hf(tmp_path / "hf", 6)), 8, labelled=True)
    assert isinstance(data, HFImages) and data.classes == [f"c{i}" for i in range(10)]
    image, label = data[4]
    assert index_of(image) == 4 and label == label_of(image) == 4
    streamed = hf_dataset(str(tmp_path / "hf"), 8, labelled=True, streaming=True)
    assert isinstance(streamed, HFStream) and streamed.num_items == 6 and streamed.classes == data.classes


def test_the_command_line_trains_on_a_saved_dataset_with_its_test_split(tmp_path: Path) -> None:
    import datasets

    datasets.DatasetDict({"train": hf_dataset_of(8), "test": hf_dataset_of(3, start=50)}).save_to_disk(
        str(tmp_path / "hf")
    )
    results = tmp_path / "r"
    assert main(["train", "--dataset", f"hf:{tmp_path / 'hf'}", "--class-cond", "--validation", "test", "--dim", "8",
                 "--dim-mults", "1,2", "--timesteps", "4", "--attention", "none", "--no-mid-attn", "--batch-size",
                 "4", "--steps", "2", "--save-every", "2", "--num-samples", "0", "--no-gif", "--seed", "0",
                 "--results", str(results), "--threads", "1"]) == 0  # fmt: skip
    config = load_checkpoint(results / "model-1.pt")["config"]
    assert config["class_names"] == [f"c{i}" for i in range(10)]
    assert config["image_size"] == [8, 8]  # sized from the first image's header: 8 px, as a folder of 8-px images
    with open(results / "validation.csv", newline="") as file:
        assert {row["name"] for row in csv.DictReader(file)} == {"val_loss", "val_loss_ema"}


def test_hub_ids_stream_and_local_data_loads_by_default(tmp_path: Path, monkeypatch) -> None:
    import datasets

    asked: list[bool] = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, streaming, **k: asked.append(streaming) or 1 / 0)
    for source in ("user/images", str(write_parquet(tmp_path / "pq", [2]))):
        with pytest.raises(ValueError, match="cannot load the Hugging Face dataset .* ZeroDivisionError"):
            hf_dataset(source, 8)
    assert asked == [True, False]


def test_bad_stream_input_is_one_clear_error(tmp_path: Path, capsys) -> None:
    write_shards(tmp_path / "s", [2, 2, 2])
    with pytest.raises(ValueError, match=r"shard pattern '.*/t-\*\.tar' matches no file"):
        ShardStream(str(tmp_path / "s" / "t-*.tar"), 8)
    with pytest.raises(ValueError, match=r"names 2 file\(s\) that do not exist: '.*shard-003.tar', '.*shard-004"):
        ShardStream(str(tmp_path / "s" / "shard-{000..004}.tar"), 8)
    with pytest.raises(ValueError, match="a labelled stream needs its classes: pass classes= .* or num_classes="):
        ShardStream(str(tmp_path / "s" / "*.tar"), 8, labelled=True)
    unlabelled = tmp_path / "u"
    write_shards(unlabelled, [2], label_suffix=None)
    stream = ShardStream(str(unlabelled / "*.tar"), 8, labelled=True, num_classes=10)
    with pytest.raises(RecordError, match="sample '00000[01]' of shard .* has no label entry .*; it has: 'png'"):
        stream.decode(next(stream_records(stream, seed=0))[0])
    saved = str(save_hf(tmp_path / "hf", 4))
    with pytest.raises(ValueError, match="has no image column 'picture'; its columns: image, label"):
        hf_dataset(saved, 8, image_column="picture")
    with pytest.raises(ValueError, match="has no label column 'y'; its columns: image, label"):
        hf_dataset(saved, 8, labelled=True, label_column="y")
    assert main(["train", "--dataset", f"shards:{tmp_path / 's' / '*.tar'}", "--epochs", "2", "--results",
                 str(tmp_path / "r")]) == 2  # fmt: skip
    assert "--epochs needs the number of items in the data, which this stream does not know" in capsys.readouterr().err
