"""The small measuring classifier: a CNN trained on the real data's labels whose penultimate layer stands in for
Inception's features on small images (where Inception, trained on 299x299 photographs, says little), and whose
accuracy on generated images measures class-conditional samples (docs/evaluation.md).

Not to be confused with the network of classifier guidance (nn/encoder_classifier.py's EncoderClassifier) or the
noise-aware classifier that guidance trains on noisy images (noise_aware_classifier.py): this one only measures.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .frechet import seeded_generator

# ----- a small classifier whose features stand in for Inception's ---------------------------------------------


class SmallImageClassifier(nn.Module):
    """A small CNN for small images (B, C, H, W) in [0, 1]; calling it gives its penultimate features (B, F), so
    it is a :data:`FeatureExtractor`; :meth:`logits` gives (B, num_classes).

    Layers follow (channels, image_size): a 3x3 conv to ``width`` channels, then L = max(1, ⌈log2(size / 4)⌉)
    stages of a 3x3 conv doubling the channels and a 2x2 max-pool, so the last map is about 4x4 (8x8 input:
    conv 1→32, conv 32→64, pool to 4x4; 32x32: three stages, 256 channels at 4x4), then a linear layer to
    ``num_features`` (ReLU) and a linear head. Parameters use PyTorch's default initialization, drawn from
    ``seed`` (an int or a CPU torch.Generator), never from the global RNG.
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        num_classes: int,
        *,
        width: int = 32,
        num_features: int = 64,
        seed: int | torch.Generator = 0,
    ) -> None:
        super().__init__()
        if min(channels, width, num_features) < 1 or image_size < 2 or num_classes < 2:
            raise ValueError(
                f"need channels, width, num_features >= 1, image_size >= 2 and num_classes >= 2; got "
                f"{channels}, {width}, {num_features}, {image_size} and {num_classes}"
            )
        stages = max(1, math.ceil(math.log2(image_size / 4)))
        widths = [width * 2**i for i in range(stages + 1)]
        convs = [(channels, width), *pairwise(widths)]
        self.convs = nn.ModuleList(nn.utils.skip_init(nn.Conv2d, c_in, c_out, 3, padding=1) for c_in, c_out in convs)
        side = image_size // 2**stages
        self.fc = nn.utils.skip_init(nn.Linear, widths[-1] * side * side, num_features)
        self.head = nn.utils.skip_init(nn.Linear, num_features, num_classes)
        self._init_parameters(seeded_generator(seed))

    def _init_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default Conv2d/Linear initialization, in module order, with ``generator``."""
        for layer in [*self.convs, self.fc, self.head]:
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(layer.weight[0].numel())  # 1 / sqrt(fan_in)
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (B, num_features) of images x (B, C, H, W) in [0, 1]."""
        h = F.relu(self.convs[0](x * 2 - 1))
        for conv in self.convs[1:]:
            h = F.max_pool2d(F.relu(conv(h)), 2)
        return F.relu(self.fc(h.flatten(1)))  # (B, C', h, w) -> (B, C'·h·w) -> (B, F)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)

    def logits(self, x: Tensor) -> Tensor:
        """Class logits (B, num_classes)."""
        return self.head(self.features(x))


def train_classifier(
    images: Tensor,
    labels: Tensor,
    *,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 2e-3,
    max_shift: int = 1,
    width: int = 32,
    num_features: int = 64,
    seed: int | torch.Generator = 0,
) -> SmallImageClassifier:
    """A :class:`SmallImageClassifier` trained on labelled real images; returned in eval mode, ready as extractor.

    Adam at ``lr`` with cosine decay to 0 over ``steps``, cross-entropy on batches of ``batch_size`` drawn with
    replacement; each batch is shifted by a random (dy, dx) in [−max_shift, max_shift]² (torch.roll) as
    augmentation. Initialization, batches and shifts all come from ``seed`` (an int or a CPU torch.Generator),
    so a seed gives the same network on the same machine, and the global RNG is neither used nor advanced.

    Args:
        images: (N, C, H, W) in [0, 1], square. labels: (N,) int64 in [0, K), K >= 2.
    """
    if images.dim() != 4 or images.shape[-1] != images.shape[-2] or labels.shape != images.shape[:1]:
        raise ValueError(
            f"need square images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    generator = seeded_generator(seed)
    net = SmallImageClassifier(
        images.shape[1], images.shape[-1], int(labels.max()) + 1, width=width, num_features=num_features, seed=generator
    ).to(images.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(0, len(labels), (batch_size,), generator=generator).to(labels.device)
        shift = [int(s) for s in torch.randint(-max_shift, max_shift + 1, (2,), generator=generator)]
        loss = F.cross_entropy(net.logits(images[idx].roll(shift, dims=(2, 3))), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def classifier_accuracy(
    classifier: SmallImageClassifier, images: Tensor, labels: Tensor, *, batch_size: int = 256
) -> float:
    """Fraction of images (N, C, H, W) whose arg-max logit is their label (N,): how well the extractor knows the
    data (a feature space that cannot tell the classes apart cannot tell a model that mixes them up)."""
    with torch.inference_mode():
        predictions = torch.cat(
            [classifier.logits(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
        )
    return float((predictions == labels.to(predictions.device)).float().mean())
