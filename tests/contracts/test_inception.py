"""denoising_diffusion.evaluation.inception: the Inception path's preprocessing and its weights file, with no download.

The preprocessing test runs torchmetrics' real Inception-v3 architecture (random weights: the weights file is
replaced by an empty one and loading is skipped) and stops it at its first convolution, whose input is compared with
an independent float64 reference: grayscale repeated to RGB, floor(255·x + 0.5) as uint8, TensorFlow 1.x bilinear
resize to 299x299 (source coordinate i·in/out, no half-pixel offset, no antialiasing), then (x − 128) / 128.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

import pytest
import torch
from torch.nn import functional as F

from denoising_diffusion.evaluation import inception
from denoising_diffusion.evaluation.inception import (
    INCEPTION_URL,
    InceptionFeatures,
    check_weights_file,
    inception_network,
    inception_weights_file,
    to_inception_input,
)


class _Stop(Exception):
    """Raised by the hook to stop the network once its input is seen (the rest of Inception is not needed)."""


def _tf1_bilinear(image: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1.x resize_bilinear(align_corners=False) of (C, H, W), float64, by its definition: output pixel
    (i, j) reads the input at (i·H/size, j·W/size), interpolating between floor and floor + 1 (clamped)."""

    def axis(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(size, dtype=torch.float64) * (n_in / size)
        lo = src.floor().long()
        return lo, (lo + 1).clamp(max=n_in - 1), src - lo

    (y0, y1, dy), (x0, x1, dx) = axis(image.shape[1]), axis(image.shape[2])
    top = image[:, y0][:, :, x0] * (1 - dx) + image[:, y0][:, :, x1] * dx
    bottom = image[:, y1][:, :, x0] * (1 - dx) + image[:, y1][:, :, x1] * dx
    return top * (1 - dy[:, None]) + bottom * dy[:, None]


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory) -> torch.nn.Module:
    """The standard network (NoTrainInceptionV3, TF1 resize) with random weights: an empty weights file, loading
    skipped for the class while it is built."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    empty = tmp_path_factory.mktemp("weights") / "empty.pt"
    torch.save({}, empty)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(NoTrainInceptionV3, "load_state_dict", lambda self, state, *args, **kwargs: None)
        return inception_network(empty)


def test_quantization_rounds_like_saving_a_png_and_repeats_grayscale() -> None:
    images = torch.tensor([0.0, 0.5 / 255, 0.49 / 255, 127.5 / 255, 1.0, 1.2, -0.1]).reshape(1, 1, 1, 7)
    out = to_inception_input(images)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 1, 7)
    assert out[0, :, 0].tolist() == [[0, 1, 0, 128, 255, 255, 0]] * 3
    with pytest.raises(ValueError, match="C = 1 .* or C = 3"):
        to_inception_input(torch.rand(1, 4, 8, 8))


def test_the_network_sees_tf1_bilinear_299_of_the_uint8_values(random_inception) -> None:
    seen: dict[str, torch.Tensor] = {}

    def stop(module, inputs):
        seen["x"] = inputs[0]
        raise _Stop

    handle = random_inception.Conv2d_1a_3x3.register_forward_pre_hook(stop)
    try:
        images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        with pytest.raises(_Stop):
            InceptionFeatures(random_inception)(images)
    finally:
        handle.remove()
    x = seen["x"]
    assert x.shape == (2, 3, 299, 299)
    quantized = (images.double() * 255 + 0.5).floor()  # (2, 1, 8, 8)
    expected = torch.stack([(_tf1_bilinear(q.expand(3, -1, -1), 299) - 128) / 128 for q in quantized])
    assert torch.allclose(x.double(), expected, atol=1e-5)
    # torch's antialiased bilinear (torchmetrics' default) and truncation instead of rounding differ visibly
    antialiased = (
        F.interpolate(quantized.expand(-1, 3, -1, -1), size=299, mode="bilinear", antialias=True) - 128
    ) / 128
    assert (x.double() - antialiased).abs().max() > 1e-2


def test_features_are_2048_per_image(random_inception) -> None:
    features = InceptionFeatures(random_inception)(torch.rand(2, 3, 16, 16))
    assert features.shape == (2, 2048) and features.dtype == torch.float32


def test_a_file_with_another_hash_is_refused_and_the_message_says_what_to_download(tmp_path: Path) -> None:
    wrong = tmp_path / "weights.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    digest = hashlib.sha256(wrong.read_bytes()).hexdigest()
    with pytest.raises(
        ValueError, match=f"not the FID Inception-v3 weights file: its SHA-256 starts with {digest[:8]}"
    ):
        check_weights_file(wrong)
    with pytest.raises(ValueError, match=INCEPTION_URL.replace(".", r"\.")):
        inception_weights_file(wrong)
    with pytest.raises(ValueError, match="does not exist"):
        inception_weights_file(tmp_path / "missing.pth")


def test_a_file_with_the_wrong_keys_is_refused(tmp_path: Path) -> None:
    """Past the hash (as for a renamed copy of another network): the keys and shapes are checked by loading."""
    wrong = tmp_path / "weights.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(ValueError, match="does not hold Inception-v3's weights \\(wrong keys or shapes\\)"):
        inception_network(wrong)
    pickled = tmp_path / "code.pth"
    torch.save({"fc.weight": PurePosixPath("x")}, pickled)  # a pickled Python object: refused, never unpickled
    with pytest.raises(ValueError, match="weights_only=True"):
        inception_network(pickled)


def test_without_network_the_error_names_the_url_and_the_place(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, dst, hash_prefix=None, progress=True):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    where = tmp_path / "hub" / "checkpoints" / inception.INCEPTION_FILE
    with pytest.raises(OSError, match="could not download") as raised:
        inception_weights_file()
    assert INCEPTION_URL in str(raised.value) and str(where) in str(raised.value)
    assert "--inception-weights" in str(raised.value)
    with pytest.raises(OSError, match="not in torch.hub's cache"):
        inception_weights_file(download=False)
