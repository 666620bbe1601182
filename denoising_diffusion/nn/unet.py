"""The DDPM U-Net (Ho et al. 2020, App. B; Nichol & Dhariwal 2021, §3): maps (x_t, t) to a tensor of x's size.

It knows nothing about noise schedules or objectives: GaussianDiffusion decides whether the output is ε, x_0 or v.

Layout for ``dim_mults = (1, 2, 4, 8)`` (channels dims = [init_dim, dim, 2·dim, 4·dim, 8·dim]):

* init: 7×7 conv, (channels [·2 with self-conditioning]) -> init_dim.
* down level i (channels dims[i]): n_i = resnet_blocks[i] ResNet blocks (default 2), attention, then a 2×
  downsample to dims[i+1] (the last level keeps its resolution and only changes channels with a 3×3 conv). Every
  ResNet output is kept as a skip connection (the last one after the attention).
* middle (8·dim): ResNet block, full attention, ResNet block.
* up level i, deepest first: n_i ResNet blocks, each on [h, skip] concatenated (one skip per block of down level
  i), attention, then a 2× upsample to dims[i] (level 0 keeps its resolution).
* out: ResNet block on [h, init-conv output], then a 1×1 conv to out_dim.

By default full softmax attention runs at the lowest resolution (the deepest level and the middle), linear
attention above it (see :mod:`.attention`); ``attention`` and ``mid_attn`` move or remove it.
"""

from __future__ import annotations

from typing import Any, Sequence, cast

import torch
from torch import Tensor, nn

from ..conditioning import ConditionSpec
from ..registry import PretrainedMixin, model_kind
from .attention import CrossAttention
from .blocks import Upsample
from .checkpointing import run_block
from .conditioning import ClassEmbedding, LevelEmbedding, NullContext, NullImage
from .embeddings import TimestepEmbedding
from .encoder import (
    DEFAULT_RESNET_BLOCKS,
    block_factories,
    check_arguments,
    check_image_size,
    down_levels,
    level_layout,
)


@model_kind()
class Unet(PretrainedMixin, nn.Module):
    """Time-conditioned U-Net with ResNet blocks and self-attention (Ho et al. 2020; Nichol & Dhariwal 2021).

    Args:
        dim: base channel width; also the number of sinusoidal time features (time embedding width 4·dim).
        init_dim: channels after the first conv (default ``dim``).
        out_dim: output channels (default ``channels``, or ``2·channels`` when ``learned_variance``).
        dim_mults: channel multiplier of each resolution level; ``len(dim_mults) - 1`` downsamplings.
        channels: image channels.
        self_condition: take a previous estimate ``x_self_cond`` as extra input (Chen et al. 2022, "Analog Bits").
        learned_variance: also output the variance interpolation v (Nichol & Dhariwal 2021, eq. 15).
        resnet_block_groups: GroupNorm groups; must divide ``init_dim`` and every ``dim * m``.
        attn_heads, attn_dim_head: heads and width per head of every attention layer.
        full_attn: per level, whether it uses full softmax attention instead of linear attention
            (default: only the deepest level). The older spelling of ``attention``, which it must agree with.
        dropout: dropout probability inside the ResNet blocks.
        resnet_blocks: ResNet blocks per level, one int for all or one per level of ``dim_mults`` (default 2, as
            Ho et al. 2020, App. B). The up level has as many as the down level, one per skip. (diffusers'
            ``layers_per_block`` counts differently: its up blocks have one more ResNet block than its down
            blocks, because they also take the downsampler's output as a skip.)
        attention: per level (or one for all), 'full' (softmax), 'linear' or 'none' (no self-attention, and no
            parameters for it); default None: from ``full_attn``.
        mid_attn: full self-attention between the two middle ResNet blocks (default True). At the deepest
            resolution attention costs little memory, but on a CPU it can be much of a small network's time.
        gradient_checkpointing: recompute each ResNet and attention block in backward instead of storing its
            activations (Chen et al. 2016): less training memory for about one more forward pass. It changes
            neither the function nor the weights, so it is not recorded in ``config``; set the attribute of the
            same name to switch it later.
        num_classes: K: take class labels in [0, K) (a learned embedding added to the time embedding, plus a
            learned null class for classifier-free guidance); None: no labels.
        cond_drop_prob: how often GaussianDiffusion replaces the classes and the context (and, with ``image_null``,
            the image) by their learned nulls while training (Ho & Salimans 2021, §3.1: 0.1 and 0.2 worked best); 0
            trains no unconditional branch.
        context_dim: D: take a context sequence (B, L, D) (with an optional (B, L) bool mask) through
            cross-attention (Rombach et al. 2022, §3.3), with a learned null context; None: no context.
        cross_attn: per level, whether it attends to the context (default: the levels with full attention); the
            middle always does when there is a context.
        cond_image_channels: C': take an image (B, C', H, W) concatenated to the input; None: none.
        cond_level: take a per-sample scalar (B,) such as a conditioning-augmentation noise level.
        image_null: the image (and level) condition can be dropped for a learned null, with the classes, at
            ``cond_drop_prob`` in training and in guidance's unconditional branch (nn/conditioning.py's NullImage);
            needs ``cond_image_channels``. Off by default: an inpainting mask is never dropped.
    """

    def __init__(
        self,
        dim: int,
        *,
        init_dim: int | None = None,
        out_dim: int | None = None,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        channels: int = 3,
        self_condition: bool = False,
        learned_variance: bool = False,
        resnet_block_groups: int = 8,
        attn_heads: int = 4,
        attn_dim_head: int = 32,
        full_attn: Sequence[bool] | None = None,
        dropout: float = 0.0,
        num_classes: int | None = None,
        cond_drop_prob: float = 0.1,
        context_dim: int | None = None,
        cross_attn: Sequence[bool] | None = None,
        cond_image_channels: int | None = None,
        cond_level: bool = False,
        image_null: bool = False,
        resnet_blocks: int | Sequence[int] = DEFAULT_RESNET_BLOCKS,
        attention: str | Sequence[str] | None = None,
        mid_attn: bool = True,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        dim_mults = tuple(int(m) for m in dim_mults)
        init_dim = dim if init_dim is None else init_dim
        out_dim = (2 * channels if learned_variance else channels) if out_dim is None else out_dim
        check_arguments(dim, init_dim, out_dim, dim_mults, channels, resnet_block_groups, dropout)
        blocks_per_level, attention_kinds = level_layout(len(dim_mults), resnet_blocks, attention, full_attn)
        full_attn = tuple(kind == "full" for kind in attention_kinds)
        cross_attn = full_attn if cross_attn is None else tuple(map(bool, cross_attn))
        self.condition_spec = ConditionSpec(num_classes, context_dim, cond_image_channels, bool(cond_level),
                                            bool(image_null))  # fmt: skip
        _check_conditions(self.condition_spec, cond_drop_prob, cross_attn, len(dim_mults))
        self.cond_drop_prob = float(cond_drop_prob) if self.condition_spec.droppable else 0.0
        self.config: dict[str, Any] = {
            "dim": dim, "init_dim": init_dim, "out_dim": out_dim, "dim_mults": list(dim_mults),
            "channels": channels, "self_condition": self_condition, "learned_variance": learned_variance,
            "resnet_block_groups": resnet_block_groups, "attn_heads": attn_heads, "attn_dim_head": attn_dim_head,
            "full_attn": list(full_attn), "dropout": dropout,
        }  # fmt: skip
        self.config.update(_condition_config(self.condition_spec, self.cond_drop_prob, cross_attn, full_attn))
        self.config.update(_layout_config(blocks_per_level, attention_kinds, bool(mid_attn)))
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.channels = channels
        self.out_dim = out_dim
        self.self_condition = self_condition
        self.learned_variance = learned_variance
        self.downsample_factor = 2 ** (len(dim_mults) - 1)

        time_dim = 4 * dim
        dims = [init_dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))

        resnet, self_attention = block_factories(
            time_dim, groups=resnet_block_groups, dropout=dropout, heads=attn_heads, dim_head=attn_dim_head
        )

        in_channels = channels * (2 if self_condition else 1) + (cond_image_channels or 0)
        self.init_conv = nn.Conv2d(in_channels, init_dim, 7, padding=3)
        self.time_embedding = TimestepEmbedding(dim, time_dim)
        self.class_embedding = ClassEmbedding(num_classes, time_dim) if num_classes is not None else None
        self.level_embedding = LevelEmbedding(dim, time_dim) if cond_level else None
        self.null_context = NullContext(context_dim) if context_dim is not None else None
        self.null_image = NullImage(time_dim) if image_null else None

        def cross(d: int) -> CrossAttention:
            assert context_dim is not None
            return CrossAttention(d, context_dim, heads=attn_heads, dim_head=attn_dim_head, groups=resnet_block_groups)

        has_context = context_dim is not None
        self.down_cross = nn.ModuleDict(
            {str(i): cross(dims[i]) for i in range(len(in_out)) if has_context and cross_attn[i]}
        )
        self.mid_cross = cross(dims[-1]) if has_context else None
        self.up_cross = nn.ModuleDict(
            {str(i): cross(dims[i + 1]) for i in range(len(in_out)) if has_context and cross_attn[i]}
        )

        self.downs = down_levels(dims, attention_kinds, blocks_per_level, resnet, self_attention)

        mid_dim = dims[-1]
        self.mid_block_1 = resnet(mid_dim, mid_dim)
        self.mid_attn = self_attention(mid_dim, "full" if mid_attn else "none")
        self.mid_block_2 = resnet(mid_dim, mid_dim)

        self.ups = nn.ModuleList()
        for level, ((d_in, d_out), kind, n) in reversed(
            list(enumerate(zip(in_out, attention_kinds, blocks_per_level)))
        ):
            up: nn.Module = nn.Conv2d(d_out, d_in, 3, padding=1) if level == 0 else Upsample(d_out, d_in)
            blocks = [*(resnet(d_out + d_in, d_out) for _ in range(n)), self_attention(d_out, kind), up]
            self.ups.append(nn.ModuleList(blocks))

        self.final_block = resnet(2 * init_dim, init_dim)
        self.final_conv = nn.Conv2d(init_dim, out_dim, 1)

    def check_image_size(self, height: int, width: int) -> None:
        """Raise ValueError unless height and width are positive multiples of ``downsample_factor``."""
        check_image_size(height, width, self.downsample_factor, len(self.config["dim_mults"]))

    def forward(
        self,
        x: Tensor,
        time: Tensor,
        x_self_cond: Tensor | None = None,
        *,
        classes: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        cond_image: Tensor | None = None,
        cond_level: Tensor | None = None,
        drop: Tensor | None = None,
    ) -> Tensor:
        """Run the U-Net.

        Args:
            x: (B, channels, H, W) float; H and W multiples of ``downsample_factor``.
            time: (B,) or scalar; int64 diffusion steps in [0, T) or float (continuous) times, embedded as floats.
            x_self_cond: (B, channels, H, W) previous estimate, only with ``self_condition`` (None: zeros).
            classes, context, context_mask, cond_image, cond_level: the condition this Unet was built to take
                (``condition_spec``; see conditioning.py): (B,) int64, (B, L, context_dim), (B, L) bool,
                (B, cond_image_channels, H, W), (B,).
            drop: (B,) bool: use the learned null class and null context for these samples.

        Returns:
            (B, out_dim, H, W).
        """
        time = self._check_inputs(x, time, x_self_cond)
        given = {"classes": classes, "context": context, "cond_image": cond_image, "cond_level": cond_level}
        missing = [name for name in self.condition_spec.required if given[name] is None]
        unexpected = [
            name for name, value in given.items() if value is not None and name not in self.condition_spec.required
        ]
        if missing or unexpected:
            raise ValueError(
                f"this Unet takes {self.condition_spec.describe()}; missing: {missing or 'none'}, "
                f"not taken: {unexpected or 'none'}"
            )
        if self.self_condition:
            x = torch.cat((x, torch.zeros_like(x) if x_self_cond is None else x_self_cond), dim=1)
        t_emb = self.time_embedding(time)  # (B, 4·dim)
        if self.class_embedding is not None and classes is not None:
            t_emb = t_emb + self.class_embedding(classes, drop)
        level = None if self.level_embedding is None or cond_level is None else self.level_embedding(cond_level)
        if self.null_image is not None and cond_image is not None and drop is not None:
            cond_image, level = self.null_image(cond_image, level, drop)
        if cond_image is not None:
            x = torch.cat((x, cond_image.to(x.dtype)), dim=1)
        if level is not None:
            t_emb = t_emb + level
        ctx = None if self.null_context is None or context is None else self.null_context(context, context_mask, drop)
        x = self.init_conv(x)
        r = x
        skips: list[Tensor] = []
        for i, level in enumerate(self.downs):
            *blocks, attn, downsample = cast(nn.ModuleList, level)
            for k, block in enumerate(blocks):
                x = self._run(block, x, t_emb)
                if k == len(blocks) - 1:  # the level's last skip is taken after its attention
                    x = self._cross(self.down_cross, i, self._run(attn, x), ctx)
                skips.append(x)
            x = downsample(x)

        x = self._run(self.mid_attn, self._run(self.mid_block_1, x, t_emb))
        if self.mid_cross is not None and ctx is not None:
            x = self._run(self.mid_cross, x, *ctx)
        x = self._run(self.mid_block_2, x, t_emb)

        for j, level in enumerate(self.ups):
            *blocks, attn, upsample = cast(nn.ModuleList, level)
            for block in blocks:  # one skip per block, as many as the down level pushed
                x = self._run(block, torch.cat((x, skips.pop()), dim=1), t_emb)
            x = upsample(self._cross(self.up_cross, len(self.ups) - 1 - j, self._run(attn, x), ctx))

        x = self._run(self.final_block, torch.cat((x, r), dim=1), t_emb)
        return self.final_conv(x)

    def _run(self, block: nn.Module, *args: Any) -> Any:
        """``block(*args)``, recomputed in backward when ``gradient_checkpointing`` is on (see checkpointing.py)."""
        return run_block(block, *args, checkpointed=self.gradient_checkpointing)

    def _cross(self, layers: nn.ModuleDict, level: int, x: Tensor, ctx: tuple[Tensor, Tensor] | None) -> Tensor:
        """x attended to the context at ``level`` when that level has cross-attention, else x."""
        if ctx is None or str(level) not in layers:
            return x
        return self._run(layers[str(level)], x, *ctx)

    def _check_inputs(self, x: Tensor, time: Tensor, x_self_cond: Tensor | None) -> Tensor:
        """Validate the forward inputs; return ``time`` as a (B,) tensor on x's device."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must have shape (B, {self.channels}, H, W), got {tuple(x.shape)}")
        self.check_image_size(x.shape[-2], x.shape[-1])
        if x_self_cond is not None:
            if not self.self_condition:
                raise ValueError("x_self_cond was given, but this Unet was built with self_condition=False")
            if x_self_cond.shape != x.shape:
                raise ValueError(f"x_self_cond must have x's shape {tuple(x.shape)}, got {tuple(x_self_cond.shape)}")
        time = torch.as_tensor(time, device=x.device)
        if time.ndim == 0:
            time = time.expand(x.shape[0])
        if time.shape != (x.shape[0],):
            raise ValueError(f"time must have shape ({x.shape[0]},) or be a scalar, got {tuple(time.shape)}")
        return time


def _check_conditions(spec: ConditionSpec, cond_drop_prob: float, cross_attn: tuple[bool, ...], levels: int) -> None:
    """Raise ValueError for condition arguments that cannot build a network."""
    for name, value in (
        ("num_classes", spec.num_classes),
        ("context_dim", spec.context_dim),
        ("cond_image_channels", spec.cond_image_channels),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    if spec.image_null and spec.cond_image_channels is None:
        raise ValueError("image_null=True needs an image condition (cond_image_channels=C)")
    if not 0.0 <= cond_drop_prob < 1.0:
        raise ValueError(f"cond_drop_prob must be in [0, 1), got {cond_drop_prob}")
    if len(cross_attn) != levels:
        raise ValueError(f"cross_attn needs one flag per level ({levels}), got {len(cross_attn)}")


def _layout_config(blocks: tuple[int, ...], kinds: tuple[str, ...], mid_attn: bool) -> dict[str, Any]:
    """The layout arguments for ``config``, only those that differ from the defaults (two ResNet blocks, attention
    at every level, attention in the middle). Checkpoints written before they were options have none of these keys,
    and a checkpoint's config must equal the rebuilt model's (checkpoint.config_differences), so a default Unet's
    config stays exactly as it was. ``full_attn`` (always recorded) carries 'full' versus 'linear'."""
    config: dict[str, Any] = {}
    if any(n != DEFAULT_RESNET_BLOCKS for n in blocks):
        config["resnet_blocks"] = blocks[0] if len(set(blocks)) == 1 else list(blocks)
    if "none" in kinds:
        config["attention"] = list(kinds)
    if not mid_attn:
        config["mid_attn"] = False
    return config


def _condition_config(
    spec: ConditionSpec, cond_drop_prob: float, cross_attn: tuple[bool, ...], full_attn: tuple[bool, ...]
) -> dict[str, Any]:
    """The condition arguments for ``config``, only those that differ from an unconditional Unet, so that an
    unconditional Unet's config (and its checkpoints) stay as they were."""
    config: dict[str, Any] = {}
    if spec.num_classes is not None:
        config["num_classes"] = spec.num_classes
    if spec.context_dim is not None:
        config["context_dim"] = spec.context_dim
        if cross_attn != full_attn:
            config["cross_attn"] = list(cross_attn)
    if spec.droppable:
        config["cond_drop_prob"] = cond_drop_prob
    if spec.cond_image_channels is not None:
        config["cond_image_channels"] = spec.cond_image_channels
    if spec.cond_level:
        config["cond_level"] = True
    if spec.image_null:
        config["image_null"] = True
    return config
