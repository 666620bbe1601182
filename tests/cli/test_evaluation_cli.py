"""Evaluation end to end, with a stand-in extractor (tests/eval_helpers.py; no Inception, no download): the real-feature
cache (reuse and invalidation), image-size checks, the Trainer's metric hook, `denoising-diffusion eval` and `sweep`
on a checkpoint trained for a few steps, and their errors."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from denoising_diffusion.cli import build_parser, main, resolve_train_options
from denoising_diffusion.cli.train import training_data
from denoising_diffusion.data.datasets import BuiltinShapes
from denoising_diffusion.data.shapes import shape_batches
from denoising_diffusion.evaluation.feature_cache import real_features
from denoising_diffusion.evaluation.features import NamedExtractor, extractor_identity, resolve_extractor
from denoising_diffusion.evaluation.metrics import ImageMetric, MetricOptions
from denoising_diffusion.evaluation.real_sets import REFERENCE_IMAGES, REFERENCE_SEED, BuiltinReference, resolve_real
from denoising_diffusion.evaluation.sweep import format_table, plot_sweep, steps_for_nfe, sweep
from denoising_diffusion.pipeline import load_pipeline
from denoising_diffusion.samplers import SAMPLERS
from tests.eval_helpers import Projection, pooled
from tests.trainer_helpers import isolated_accelerate, make_trainer, tiny_diffusion  # noqa: F401 (autouse fixture)

STAND_IN = "tests.eval_helpers:pooled"


def _write_images(folder: Path, count: int, size: int = 8, seed: int = 0, ext: str = "png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for i in range(count):
        pixels = (torch.rand(size, size, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i:03d}.{ext}")
    return folder


class Counting:
    """``pooled`` that counts the images it has seen (to tell a cache hit from a recomputation)."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.seen += len(images)
        return pooled(images)


# ----- the cache ----------------------------------------------------------------------------------------------------


def test_cached_real_features_are_reused_and_invalidated(tmp_path: Path) -> None:
    folder, cache = _write_images(tmp_path / "real", 6, ext="bmp"), tmp_path / "cache"  # BMP: size fixed by pixels
    counting = Counting()
    extractor = NamedExtractor(counting, "counting")

    def compute(named: NamedExtractor = extractor, size: int = 8, resize: bool = False):
        return real_features(folder, named, image_size=size, channels=3, resize=resize, cache_dir=cache)

    first = compute()
    assert counting.seen == 6 and first.num_images == 6 and len(list(cache.glob("real-*.pt"))) == 1
    again = compute()
    assert counting.seen == 6 and torch.equal(again.features, first.features)  # reused, bit for bit

    # a file rewritten with the same size in bytes (only its mtime tells): recomputed
    rewritten = folder / "002.bmp"
    old = rewritten.stat()
    Image.fromarray(torch.zeros(8, 8, 3, dtype=torch.uint8).numpy()).save(rewritten)
    os.utime(rewritten, ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))
    assert rewritten.stat().st_size == old.st_size
    changed = compute()
    assert counting.seen == 12 and not torch.equal(changed.features, first.features)
    compute()
    assert counting.seen == 12  # and cached again
    _write_images(folder / "more", 1, seed=5)  # a file added
    assert compute().num_images == 7 and counting.seen == 19

    other = NamedExtractor(counting, "another identity")  # another extractor: recomputed, its own file
    compute(other)
    assert counting.seen == 26 and len(list(cache.glob("real-*.pt"))) == 2
    compute(size=4, resize=True)  # another image size
    assert counting.seen == 33 and len(list(cache.glob("real-*.pt"))) == 3
    assert not list(cache.glob(".*.tmp"))  # written through a temporary file renamed into place


def test_an_extractors_identity_follows_its_weights_and_code() -> None:
    assert extractor_identity(Projection(seed=0), "p") == extractor_identity(Projection(seed=0), "p")
    assert extractor_identity(Projection(seed=0), "p") != extractor_identity(Projection(seed=1), "p")
    assert extractor_identity(pooled, "f") != extractor_identity(Counting(), "f")
    named = resolve_extractor(STAND_IN)
    assert named.extractor is pooled and named.identity.startswith(STAND_IN + "#")
    with pytest.raises(ValueError, match="unknown features 'vgg'; allowed values: 'inception' or"):
        resolve_extractor("vgg")
    with pytest.raises(ValueError, match="has no attribute 'nothing'"):
        resolve_extractor("tests.eval_helpers:nothing")


def test_mixed_image_sizes_need_resize(tmp_path: Path) -> None:
    folder = _write_images(tmp_path / "real", 3, size=8)
    _write_images(folder / "small", 2, size=6, seed=1)
    named = NamedExtractor(pooled, "pooled")
    with pytest.raises(ValueError, match=r"mixed sizes: .*6x6 \(2 files.*Pass --resize"):
        real_features(folder, named, image_size=8, channels=3, use_cache=False)
    assert real_features(folder, named, image_size=8, channels=3, resize=True, use_cache=False).num_images == 5


# ----- a checkpoint trained for a few steps, with the metric during training ------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, list[dict[str, float]]]:
    """(checkpoint, real folder, log_fn rows): 4 Trainer steps with the FID every 2 steps on 6 samples."""
    root = tmp_path_factory.mktemp("eval")
    real = _write_images(root / "real", 12)
    features = real_features(real, NamedExtractor(pooled, "pooled"), image_size=8, channels=3, use_cache=False)
    rows: list[dict[str, float]] = []
    seen: list[torch.Tensor] = []
    fid = ImageMetric(features, pooled)

    def metric(images: torch.Tensor) -> dict[str, float]:
        seen.append(images)
        return dict(fid(images))

    trainer = make_trainer(tiny_diffusion(), real, root / "results", metric=metric, metric_every=2,
                           metric_num_samples=6, log_fn=rows.append)  # fmt: skip
    trainer.train()
    assert [len(images) for images in seen] == [6, 6]
    # the fixed sample seed (the data seed): the last metric saw exactly what the final EMA draws from it
    assert torch.equal(seen[-1], trainer.sample(6, seed=trainer.data_seed))
    return root / "results" / "model-2.pt", real, rows


def test_the_trainer_logs_the_metric_beside_the_loss(trained) -> None:
    checkpoint, _, rows = trained
    with open(checkpoint.parent / "metrics.csv", newline="") as file:
        logged = list(csv.DictReader(file))
    assert [(r["step"], r["name"]) for r in logged] == [("2", "fid"), ("4", "fid")]
    assert all(float(r["value"]) > 0 for r in logged)
    metric_rows = [r for r in rows if "fid" in r]
    assert [r["step"] for r in metric_rows] == [2, 4]
    assert metric_rows[-1]["fid"] == pytest.approx(float(logged[-1]["value"]), rel=1e-5)


def test_cli_eval_prints_the_metrics_and_n(trained, tmp_path: Path, capsys) -> None:
    checkpoint, real, _ = trained
    argv = ["eval", str(checkpoint), str(real), "--num", "8", "--features", STAND_IN, "--steps", "3",
            "--cache-dir", str(tmp_path), "--device", "cpu", "--kid-subsets", "10"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "real:       12 images" in out and "generated:  8 images (N)" in out and "NFE 3" in out
    for name in ("FID:", "KID:", "precision:", "recall:"):
        assert name in out
    assert main(argv) == 0  # the second run reads the cached real features and gives the same numbers
    assert capsys.readouterr().out == out


def test_sweep_has_one_row_per_sampler_and_nfe_and_writes_the_plot(trained, tmp_path: Path) -> None:
    checkpoint, real, _ = trained
    diffusion = load_pipeline(checkpoint)
    features = real_features(real, NamedExtractor(pooled, "pooled"), image_size=8, channels=3, use_cache=False)
    points = sweep(diffusion, features, pooled, ["ddim", "heun"], [3, 4], num=6, batch_size=6,
                   options=MetricOptions(metrics=("fid", "kid"), kid_subsets=5))  # fmt: skip
    assert [(p.sampler, p.steps, p.nfe) for p in points] == [("ddim", 3, 3), ("ddim", 4, 4), ("heun", 2, 3),
                                                             ("heun", 2, 3)]  # fmt: skip
    table = format_table(points).splitlines()
    assert table[0].split()[:5] == ["sampler", "steps", "NFE", "tolerance", "FID"] and len(table) == 2 + 4
    assert plot_sweep(points, tmp_path / "plot.png").stat().st_size > 0


def test_steps_for_nfe_never_exceeds_the_budget() -> None:
    for info in SAMPLERS.values():
        if not info.adaptive:
            for nfe in range(info.evals_per_step + info.extra_evals, 30):
                steps = steps_for_nfe(info, nfe)
                assert info.nfe(steps) <= nfe < info.nfe(steps + 1), (info.name, nfe)


def test_cli_sweep_prints_the_table_and_writes_the_plot(trained, tmp_path: Path, capsys) -> None:
    checkpoint, real, _ = trained
    plot = tmp_path / "sweep.png"
    argv = ["sweep", str(checkpoint), str(real), "--samplers", "ddim,dpmpp_2m", "--nfe", "2,3", "--num", "6",
            "--features", STAND_IN, "--metrics", "fid", "--plot", str(plot), "--no-cache"]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.split()[:1] in (["ddim"], ["dpmpp_2m"])]
    assert [(r[0], r[2]) for r in rows] == [("ddim", "2"), ("ddim", "3"), ("dpmpp_2m", "2"), ("dpmpp_2m", "3")]
    assert plot.is_file()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--samplers", "ddim,plms"], "unknown sampler 'plms'; allowed values: 'ddpm', 'ddim'"),
        (["--samplers", "ode"], "sampler 'ode' needs a continuous-time process"),
        (["--samplers", "heun", "--nfe", "0"], "--nfe: expected comma-separated positive ints"),
        (["--samplers", "ddim", "--num", "3"], "need at least 4 generated images, got 3"),
    ],
)
def test_sweep_errors(trained, capsys, extra, message) -> None:
    checkpoint, real, _ = trained
    argv = ["sweep", str(checkpoint), str(real), "--nfe", "2", "--features", STAND_IN, "--no-cache", *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_eval_errors(trained, tmp_path: Path, capsys) -> None:
    checkpoint, real, _ = trained
    mixed = _write_images(tmp_path / "mixed", 2, size=8)
    _write_images(mixed / "big", 2, size=10, seed=1)
    base = ["eval", str(checkpoint), "--features", STAND_IN, "--no-cache"]
    assert main([*base, str(mixed), "--num", "4"]) == 2
    assert "mixed sizes" in capsys.readouterr().err
    assert main([*base, str(real), "--num", "1", "--metrics", "fid"]) == 2
    assert "fid need at least 2 generated images, got 1" in capsys.readouterr().err
    bad_weights = tmp_path / "w.pth"
    bad_weights.write_bytes(b"not weights")
    assert main(["eval", str(checkpoint), str(real), "--num", "4", "--inception-weights", str(bad_weights)]) == 2
    assert "not the FID Inception-v3 weights file" in capsys.readouterr().err


def test_an_adaptive_solver_is_reported_at_its_tolerance_with_the_evaluations_it_used() -> None:
    """'ode' on a (tiny, untrained) VP model: one row per tolerance, with the NFE read from StepRecord.nfe (an
    untrained network's ODE is stiff near t_min, so the counts are not even monotone in the tolerance here)."""
    from denoising_diffusion.diffusion import GaussianDiffusion
    from denoising_diffusion.evaluation.sweep import generate
    from denoising_diffusion.nn.unet import Unet

    torch.manual_seed(0)
    unet = Unet(8, dim_mults=(1, 2), channels=3, resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    diffusion = GaussianDiffusion(unet, image_size=8, process="vp").eval()
    real = real_features_of(torch.rand(4, 3, 8, 8))
    points = sweep(diffusion, real, pooled, ["ode"], [5], num=2, batch_size=2, tolerances=[0.5, 0.05],
                   options=MetricOptions(metrics=("fid",)))  # fmt: skip
    assert [(p.sampler, p.tolerance) for p in points] == [("ode", 0.5), ("ode", 0.05)]
    assert min(p.nfe for p in points) > 2  # more than the 2 output points: the solver's own steps
    assert generate(diffusion, 2, sampler="ode", steps=2, rtol=0.5, atol=0.5).nfe == points[0].nfe


def real_features_of(images: torch.Tensor):
    from denoising_diffusion.evaluation.metrics import RealFeatures

    return RealFeatures.from_features(pooled(images))


# ----- REAL as a named data set (real_sets.py) ----------------------------------------------------------------------


def test_cli_eval_and_sweep_score_against_a_named_data_set(trained, tmp_path: Path, monkeypatch, capsys) -> None:
    checkpoint, _, _ = trained
    monkeypatch.chdir(tmp_path)  # no path named 'shapes' here
    common = ["--features", STAND_IN, "--real-num", "12", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    assert main(["eval", str(checkpoint), "shapes", "--num", "6", "--steps", "3", "--kid-subsets", "5", *common]) == 0
    out = capsys.readouterr().out
    assert "real:       12 images from built-in data set 'shapes' (seed 1)" in out and "FID:" in out
    argv = ["sweep", str(checkpoint), "shapes", "--samplers", "ddim", "--nfe", "2", "--num", "6", "--metrics", "fid",
            "--plot", str(tmp_path / "sweep.png"), *common]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (
        "real:       12 images from built-in data set 'shapes' (seed 1)" in out and (tmp_path / "sweep.png").is_file()
    )
    assert len(list((tmp_path / "cache").glob("real-*.pt"))) == 1  # the sweep reused eval's entry


def test_a_folder_named_like_a_data_set_wins(trained, tmp_path: Path, monkeypatch, capsys) -> None:
    checkpoint, _, _ = trained
    _write_images(tmp_path / "shapes", 5)
    monkeypatch.chdir(tmp_path)
    argv = ["eval", str(checkpoint), "shapes", "--num", "4", "--steps", "2", "--features", STAND_IN, "--metrics",
            "fid", "--no-cache", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert "real:       5 images from shapes (features" in capsys.readouterr().out
    assert main([*argv, "--real-num", "10"]) == 2  # a folder's images are all used: no count to choose
    assert "--real-num (num_images=10) counts the images of a named data set" in capsys.readouterr().err


def test_an_unknown_real_that_is_no_folder_lists_the_known_sets(trained, tmp_path: Path, capsys) -> None:
    checkpoint, _, _ = trained
    missing = os.fspath(tmp_path / "cifar10")
    assert main(["eval", str(checkpoint), missing, "--num", "4", "--features", STAND_IN, "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert f"REAL {missing!r} is neither an existing folder (no such file or directory) nor a built-in" in err
    assert "known data sets: shapes" in err
    with pytest.raises(ValueError, match="unknown built-in data set 'mnist'; known data sets: shapes"):
        BuiltinReference("mnist")


def test_a_named_sets_cache_entry_is_reused_and_keyed_on_count_size_and_channels(tmp_path: Path) -> None:
    counting = Counting()
    extractor = NamedExtractor(counting, "counting")

    def compute(reference: BuiltinReference, size: int = 8, channels: int = 3):
        return real_features(reference, extractor, image_size=size, channels=channels, cache_dir=tmp_path)

    first = compute(BuiltinReference("shapes", 6))
    assert counting.seen == 6 and first.num_images == 6
    expected = pooled(BuiltinShapes(6, 8, seed=REFERENCE_SEED).images).double()  # what the features are of
    assert torch.equal(first.features, expected)
    assert torch.equal(compute(BuiltinReference("shapes", 6)).features, first.features) and counting.seen == 6
    assert compute(BuiltinReference("shapes", 7)).num_images == 7 and counting.seen == 13  # another count
    compute(BuiltinReference("shapes", 6), size=6)  # another size
    compute(BuiltinReference("shapes", 6), channels=1)  # another channel count
    compute(BuiltinReference("shapes", 6, seed=2))  # another seed
    assert counting.seen == 13 + 3 * 6 and len(list(tmp_path.glob("real-*.pt"))) == 5
    compute(BuiltinReference("shapes", 7), size=8)
    assert counting.seen == 31  # every entry kept: back to 7 images at 8x8 reads its file


def test_the_reference_draw_is_not_the_training_draw(capsys) -> None:
    """The default job's training images (cli/train.py, seed 0) against a reference of the same count: no image in
    common (seed 1); and the batched draw is BuiltinShapes' bit for bit, in every channel layout."""
    args = build_parser().parse_args(["train"])
    training = training_data(args, resolve_train_options(args))
    size, count = training.image_size[0], len(training)
    reference = resolve_real("shapes", count)
    assert isinstance(reference, BuiltinReference) and reference.seed == REFERENCE_SEED != training.seed
    drawn = torch.cat(list(reference.batches(size, 3, batch_size=500)))
    assert drawn.shape == training.images.shape
    nearest = torch.cdist(drawn.flatten(1).double(), training.images.flatten(1).double()).min()
    assert nearest > 0.1  # not one reference image is a training image
    for channels in (1, 3, 4):
        batches = list(shape_batches(10, (6, 7), channels, seed=3, batch_size=4))
        assert [len(b) for b in batches] == [4, 4, 2]
        assert torch.equal(torch.cat(batches), BuiltinShapes(10, (6, 7), channels, seed=3).images)
    assert resolve_real("shapes").num_images == REFERENCE_IMAGES == 10_000  # type: ignore[union-attr]
