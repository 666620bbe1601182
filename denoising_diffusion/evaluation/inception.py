"""The standard FID feature extractor: Inception-v3's 2048 pool features, as TensorFlow's original FID computes them.

The network is torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's ``FeatureExtractorInceptionV3``: the
2015-12-05 TensorFlow graph's weights, converted), so the numbers match the published FID code to a small tolerance.
What happens to an image batch (N, C, H, W) in [0, 1] on the way in, in this order:

1. **Channels**: grayscale (C = 1) is repeated to three channels; C = 3 is taken as RGB; other counts are refused.
2. **Quantization**: x -> floor(255·clamp(x, 0, 1) + 0.5) as uint8, exactly what writing the images to PNG files
   (torchvision's save_image) does, so that a folder of saved samples and the same samples in memory score alike.
   (torchmetrics' own ``normalize=True`` truncates instead: (x·255).byte().)
3. **Resize to 299x299**: TensorFlow 1.x's ``resize_bilinear`` with align_corners=False, reproduced exactly by
   torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x``: output pixel i samples the input at
   i·(in/out) (no half-pixel offset), interpolating linearly between floor and floor + 1 (clamped to the edge), with
   no antialiasing, on the uint8 values as floats. This is the resize of the original TF FID code, torch-fidelity
   and clean-fid's "legacy_tensorflow" mode. torchmetrics' default (``antialias=True``: torch's antialiased bilinear)
   gives different numbers; we pass ``antialias=False`` to get the standard one.
4. **Scaling** to [-1, 1): (x − 128) / 128, inside the network.

The weights file (``weights-inception-2015-12-05-6726825d.pth``, 91 MB) is checked by its SHA-256, whose first
eight hex digits are in its name (torch.hub's convention): it is read from ``inception_weights`` if given, else
from torch.hub's cache (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), else
downloaded there once. Without a network, the error names the URL and where to put the file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import Tensor, nn

INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256_PREFIX = "6726825d"  # the file's SHA-256 starts with the hash in its name
INCEPTION_SIZE = 299
INCEPTION_FEATURES = 2048
INCEPTION_IDENTITY = "inception-v3-2048:6726825d:uint8-round:tf1-bilinear-299"
"""The Inception extractor's identity in the real-feature cache: weights, quantization and resize."""


def to_inception_input(images: Tensor) -> Tensor:
    """Images (N, C, H, W) in [0, 1], C in {1, 3} -> uint8 (N, 3, H, W): grayscale repeated, then
    floor(255·x + 0.5) (steps 1 and 2 of this module's docstring; the network resizes)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"Inception takes images (N, C, H, W) with C = 1 (repeated to RGB) or C = 3, got {tuple(images.shape)}"
        )
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)  # (N, 1, H, W) -> (N, 3, H, W)
    return (images.clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8)


class InceptionFeatures(nn.Module):
    """A :data:`~denoising_diffusion.evaluation.FeatureExtractor`: images (N, C, H, W) in [0, 1] -> Inception's
    pool features (N, 2048), float32.

    ``network`` has Inception's input contract: uint8 (N, 3, H, W) of any size -> (N, F); it resizes and scales
    (:func:`inception_network` builds the standard one)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        device = next(self.network.parameters(), torch.empty(0)).device
        return self.network(to_inception_input(images).to(device)).float()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _where_to_put() -> str:
    return (
        f"download {INCEPTION_URL} and put it at {default_weights_path()} (torch.hub's cache), or pass its path as "
        "--inception-weights PATH (inception_weights= in Python)"
    )


def default_weights_path() -> Path:
    """Where the weights are looked for and downloaded to: torch.hub's checkpoint cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def check_weights_file(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is the FID Inception weights file (its SHA-256 starts with 6726825d), else ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Inception weights file {os.fspath(path)!r} does not exist; {_where_to_put()}")
    digest = _sha256(path)
    if not digest.startswith(INCEPTION_SHA256_PREFIX):
        raise ValueError(
            f"{os.fspath(path)!r} is not the FID Inception-v3 weights file: its SHA-256 starts with {digest[:8]}, "
            f"expected {INCEPTION_SHA256_PREFIX} ({INCEPTION_FILE}); {_where_to_put()}"
        )
    return path


def inception_weights_file(inception_weights: str | os.PathLike[str] | None = None, *, download: bool = True) -> Path:
    """The checked weights file: ``inception_weights`` if given, else torch.hub's cached copy, else downloaded into
    the cache (``download``). Raises ValueError for a file that is not the expected one and OSError, naming the
    URL and the place to put the file, when it can be neither found nor downloaded."""
    if inception_weights is not None:
        return check_weights_file(inception_weights)
    cached = default_weights_path()
    if cached.is_file():
        return check_weights_file(cached)
    if not download:
        raise OSError(f"the FID Inception-v3 weights are not in torch.hub's cache; {_where_to_put()}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(
            INCEPTION_URL, os.fspath(cached), hash_prefix=INCEPTION_SHA256_PREFIX, progress=True
        )
    except Exception as err:  # noqa: BLE001 - URLError, HTTPError, socket errors, SSL errors ...
        raise OSError(f"could not download the FID Inception-v3 weights ({err}); {_where_to_put()}") from None
    return check_weights_file(cached)


def inception_network(weights: str | os.PathLike[str]) -> nn.Module:
    """torchmetrics' NoTrainInceptionV3 (2048 pool features, TF1 bilinear resize) with the weights in ``weights``,
    on the CPU. The file is first read with ``weights_only=True`` (no pickled code runs); a file that does not hold
    Inception-v3's tensors (wrong keys or shapes) is a ValueError."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError:
        raise ImportError("the Inception features need torchmetrics and torch-fidelity: "
                          "pip install 'denoising-diffusion[eval]'") from None  # fmt: skip
    where = os.fspath(weights)
    try:
        state = torch.load(where, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling refuses or fails in many ways
        raise ValueError(f"{where!r} is not a weights file that loads with weights_only=True: {err}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{where!r} does not hold a state dict of tensors (Inception-v3's weights)")
    try:
        return NoTrainInceptionV3(
            name="inception-v3-compat", features_list=[str(INCEPTION_FEATURES)], feature_extractor_weights_path=where,
            antialias=False,
        )  # fmt: skip
    except RuntimeError as err:  # load_state_dict: missing or unexpected keys, mismatched shapes
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{where!r} does not hold Inception-v3's weights (wrong keys or shapes): {first}") from None


def load_inception(
    inception_weights: str | os.PathLike[str] | None = None, *, device: str | torch.device = "cpu"
) -> InceptionFeatures:
    """The standard FID extractor on ``device``: weights from :func:`inception_weights_file`, network from
    :func:`inception_network`, preprocessing from :func:`to_inception_input`."""
    return InceptionFeatures(inception_network(inception_weights_file(inception_weights))).to(device)
