"""The Unet's layout options (issue 14): ResNet blocks per level, where self-attention sits, and gradient
checkpointing. Checked against a hand count of parameters, an independent statement of the forward's wiring, the
old defaults' parameter names, and (checkpointing) the gradients and saved activations without it.
"""

from __future__ import annotations

import json
from itertools import product

import pytest
import torch
from torch import nn

from denoising_diffusion import GaussianDiffusion, build, load_pipeline, save_pipeline, spec_of
from denoising_diffusion.cli import build_parser, resolve_train_options
from denoising_diffusion.cli.train import build_diffusion
from denoising_diffusion.nn import Attention, LinearAttention, ResnetBlock, Unet
from denoising_diffusion.nn.attention import CrossAttention

SMALL = dict(dim=8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=4)  # 8x8 images


def small_unet(**kwargs) -> Unet:
    torch.manual_seed(0)
    return Unet(**{**SMALL, **kwargs})


def resnet_params(a: int, b: int, time_dim: int) -> int:
    """Hand count of ResnetBlock(a, b): norm₁ (2a), conv₁ 3x3 (9ab + b), time MLP (time_dim·2b + 2b), norm₂ (2b),
    conv₂ 3x3 (9b² + b), and a 1x1 skip conv (ab + b) when a != b."""
    skip = a * b + b if a != b else 0
    return 2 * a + 9 * a * b + b + time_dim * 2 * b + 2 * b + 2 * b + 9 * b * b + b + skip


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def reference_forward(unet: Unet, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The documented wiring, written out independently of Unet.forward (unconditional): down level i pushes one
    skip per ResNet block (the last after attention); up level i pops one per block, deepest first."""
    emb = unet.time_embedding(t)
    h = r = unet.init_conv(x)
    skips = []
    for level in unet.downs:
        *blocks, attn, down = list(level)
        for block in blocks[:-1]:
            h = block(h, emb)
            skips.append(h)
        h = attn(blocks[-1](h, emb))
        skips.append(h)
        h = down(h)
    h = unet.mid_block_2(unet.mid_attn(unet.mid_block_1(h, emb)), emb)
    for level in unet.ups:
        *blocks, attn, up = list(level)
        for block in blocks:
            h = block(torch.cat((h, skips.pop()), dim=1), emb)
        h = up(attn(h))
    assert not skips
    return unet.final_conv(unet.final_block(torch.cat((h, r), dim=1), emb))


# ----- resnet_blocks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("blocks", [1, 2, 3, (1, 3)])
def test_resnet_blocks_count_and_parameters(blocks: int | tuple[int, int]) -> None:
    """2·Σ n_i level blocks + 2 middle + 1 final ResnetBlocks; the parameter difference to one block per level is
    the hand count of the extra down (d_in -> d_in) and up (d_out + d_in -> d_out) blocks."""
    n = (blocks, blocks) if isinstance(blocks, int) else blocks
    unet, one = small_unet(resnet_blocks=blocks), small_unet(resnet_blocks=1)
    assert sum(isinstance(m, ResnetBlock) for m in unet.modules()) == 2 * sum(n) + 3
    assert [len(level) - 2 for level in unet.downs] == list(n)
    assert [len(level) - 2 for level in unet.ups] == list(n)[::-1]  # up levels run deepest first
    dims, time_dim = [8, 8, 16], 32
    extra = sum(
        (k - 1) * (resnet_params(d_in, d_in, time_dim) + resnet_params(d_out + d_in, d_out, time_dim))
        for k, d_in, d_out in zip(n, dims[:-1], dims[1:])
    )
    assert count(unet) - count(one) == extra


def test_default_is_two_blocks_with_the_old_names() -> None:
    """An explicit resnet_blocks=2 (and the attention the default full_attn means) builds the parameter names, the
    weights and the config of a Unet built without them: checkpoints written before these options load."""
    plain = small_unet()
    explicit = small_unet(resnet_blocks=2, attention=("linear", "full"), mid_attn=True, gradient_checkpointing=False)
    assert list(plain.state_dict()) == list(explicit.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), explicit.state_dict().values()))
    assert plain.config == explicit.config
    assert not {"resnet_blocks", "attention", "mid_attn", "gradient_checkpointing"} & plain.config.keys()
    assert "downs.0.1.conv_1.weight" in plain.state_dict() and "downs.0.2.to_qkv.weight" in plain.state_dict()
    assert "ups.0.2.to_qkv.weight" in plain.state_dict() and "downs.1.3.weight" in plain.state_dict()


def test_a_spec_without_the_new_keys_builds_two_blocks() -> None:
    spec = {"kind": "Unet", **small_unet().config}
    unet = build(spec)
    assert [len(level) for level in unet.downs] == [4, 4] and isinstance(unet.mid_attn, Attention)


# ----- attention ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attention, kinds",
    [
        ("none", (nn.Identity, nn.Identity)),
        (("full", "none"), (Attention, nn.Identity)),
        (("none", "linear"), (nn.Identity, LinearAttention)),
        ("full", (Attention, Attention)),
    ],
)
def test_attention_kinds_per_level(attention, kinds) -> None:
    unet = small_unet(attention=attention)
    assert tuple(type(level[-2]) for level in unet.downs) == kinds
    assert tuple(type(level[-2]) for level in unet.ups) == kinds[::-1]
    names = list(unet.state_dict())
    for i, kind in enumerate(kinds):  # no parameters where there is no attention; the downsample keeps its index
        assert any(name.startswith(f"downs.{i}.2.") for name in names) == (kind is not nn.Identity)
        assert any(name.startswith(f"downs.{i}.3.") for name in names)


def test_full_attn_is_the_older_spelling_of_attention() -> None:
    old, new = small_unet(full_attn=(True, False)), small_unet(attention=("full", "linear"))
    assert old.config == new.config and list(old.state_dict()) == list(new.state_dict())
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 7])
    new.load_state_dict(old.state_dict())
    torch.testing.assert_close(old(x, t), new(x, t), rtol=0, atol=0)


def test_mid_attn_off_removes_only_the_middle_attention() -> None:
    on, off = small_unet(), small_unet(mid_attn=False)
    assert isinstance(off.mid_attn, nn.Identity) and off.config["mid_attn"] is False
    missing = set(on.state_dict()) - set(off.state_dict())
    assert missing and all(name.startswith("mid_attn.") for name in missing)
    assert count(on) - count(off) == count(on.mid_attn)


@pytest.mark.parametrize(
    "blocks, attention, mid_attn",
    list(product([1, 2, 3, (1, 3)], [None, "none", ("full", "none"), ("linear", "linear")], [True, False])),
)
def test_every_layout_follows_the_documented_wiring(blocks, attention, mid_attn) -> None:
    """Shape (B, channels, 8, 8), and the same output, to float64 rounding, as the wiring written out by hand."""
    unet = small_unet(resnet_blocks=blocks, attention=attention, mid_attn=mid_attn).double()
    x, t = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 999])
    out = unet(x, t)
    assert out.shape == (2, 3, 8, 8)
    torch.testing.assert_close(out, reference_forward(unet, x, t), rtol=0, atol=1e-12)


def test_layouts_with_context_and_classes() -> None:
    unet = small_unet(resnet_blocks=(1, 3), attention=("none", "full"), mid_attn=False, context_dim=6, num_classes=3)
    assert set(unet.down_cross) == {"1"} and isinstance(unet.mid_cross, CrossAttention)
    x, ctx = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 6)
    assert unet(x, torch.tensor([1, 2]), classes=torch.tensor([0, 2]), context=ctx).shape == (2, 3, 8, 8)


# ----- bad values -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("blocks", [0, -1, (1,), (1, 2, 3), (2, 0), 1.5, "2", True, None])
def test_bad_resnet_blocks(blocks) -> None:
    with pytest.raises(ValueError, match=r"resnet_blocks must be a positive integer.*one per level of dim_mults \(2\)"):
        small_unet(resnet_blocks=blocks)


@pytest.mark.parametrize(
    "attention", ["softmax", ("full",), ("full", "lin"), ("full", "linear", "none"), 3, ("none", None)]
)
def test_bad_attention(attention) -> None:
    with pytest.raises(ValueError, match=r"attention must be.*'full', 'linear', 'none'.*\(2\)"):
        small_unet(attention=attention)


def test_full_attn_must_agree_with_attention() -> None:
    with pytest.raises(ValueError, match="full_attn=.*disagrees with attention="):
        small_unet(full_attn=(True, False), attention=("linear", "full"))
    with pytest.raises(ValueError, match=r"full_attn needs one flag per level \(2\)"):
        small_unet(full_attn=(True,))


# ----- config and checkpoints -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, recorded",
    [
        ({"resnet_blocks": 1}, {"resnet_blocks": 1}),
        ({"resnet_blocks": (1, 3)}, {"resnet_blocks": [1, 3]}),
        ({"resnet_blocks": (2, 2)}, {}),
        ({"attention": ("none", "full")}, {"attention": ["none", "full"], "full_attn": [False, True]}),
        ({"attention": "full"}, {"full_attn": [True, True]}),
        ({"mid_attn": False}, {"mid_attn": False}),
        ({"gradient_checkpointing": True}, {}),
    ],
)
def test_config_records_only_what_differs(options, recorded) -> None:
    unet = small_unet(**options)
    new_keys = {"resnet_blocks", "attention", "mid_attn", "gradient_checkpointing"}
    assert {key: unet.config[key] for key in recorded} == recorded
    assert new_keys & unet.config.keys() == new_keys & recorded.keys()
    rebuilt = Unet(**json.loads(json.dumps(unet.config)))
    assert rebuilt.config == unet.config and list(rebuilt.state_dict()) == list(unet.state_dict())


def test_pipeline_round_trip_of_a_non_default_layout(tmp_path) -> None:
    unet = small_unet(resnet_blocks=(1, 3), attention=("none", "linear"), mid_attn=False, gradient_checkpointing=True)
    diffusion = GaussianDiffusion(unet, image_size=8, timesteps=10)
    path = save_pipeline(diffusion, tmp_path / "layout.pt")
    loaded = load_pipeline(path)
    assert spec_of(loaded) == spec_of(diffusion)
    assert loaded.model.gradient_checkpointing is False  # a memory setting, not part of the model
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 9])
    torch.testing.assert_close(loaded.model(x, t), unet.eval()(x, t), rtol=0, atol=0)


# ----- gradient checkpointing -----------------------------------------------------------------------------------


def loss_and_grads(unet: Unet, seed: int, **condition) -> tuple[torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(seed)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    unet.zero_grad()
    loss = unet(x, torch.tensor([3, 800]), **condition).square().mean()
    loss.backward()
    return loss.detach(), [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in unet.parameters()]


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_checkpointing_gives_the_same_loss_and_gradients(dropout: float) -> None:
    """Non-reentrant checkpointing restores the RNG for the recomputation, so even with dropout the gradients are
    those without it (float64, to rounding: the recomputed forward runs the same kernels)."""
    options = dict(resnet_blocks=(1, 2), attention=("linear", "full"), dropout=dropout, context_dim=6)
    plain, ckpt = small_unet(**options).double(), small_unet(**options, gradient_checkpointing=True).double()
    ckpt.load_state_dict(plain.state_dict())
    ctx = {"context": torch.randn(2, 5, 6, dtype=torch.float64)}
    loss_a, grads_a = loss_and_grads(plain.train(), 1, **ctx)
    loss_b, grads_b = loss_and_grads(ckpt.train(), 1, **ctx)
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=1e-14)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
    if dropout > 0:  # the dropout masks really are random: another seed gives other gradients
        assert not torch.allclose(loss_and_grads(plain, 2, **ctx)[1][0], loss_and_grads(plain, 1, **ctx)[1][0])


def saved_bytes(unet: Unet) -> int:
    """Bytes of the distinct storages a training forward keeps for backward: what autograd saves outside any
    checkpointed block, plus every block's inputs (what a checkpoint keeps to recompute it). The same accounting
    for both settings; a structural measure, not a timing one."""
    kept: dict[int, torch.Tensor] = {}  # storage pointer -> a tensor on it (kept alive, so no pointer is reused)

    def keep(t: torch.Tensor) -> torch.Tensor:
        kept.setdefault(t.untyped_storage().data_ptr(), t)
        return t

    def keep_inputs(_: nn.Module, args: tuple) -> None:
        for arg in args:
            if torch.is_tensor(arg):
                keep(arg)

    blocks = [m for m in unet.modules() if isinstance(m, (ResnetBlock, Attention, LinearAttention, CrossAttention))]
    hooks = [block.register_forward_pre_hook(keep_inputs) for block in blocks]
    torch.manual_seed(0)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        unet.train()(torch.randn(2, 3, 8, 8), torch.tensor([1, 2])).sum()
    for hook in hooks:
        hook.remove()
    return sum(t.untyped_storage().nbytes() for t in kept.values())


def test_checkpointing_keeps_fewer_activations() -> None:
    plain, ckpt = small_unet(), small_unet(gradient_checkpointing=True)
    assert saved_bytes(ckpt) < 0.5 * saved_bytes(plain)


def test_checkpointing_only_while_training_with_grad() -> None:
    """In eval mode or under no_grad the checkpointed Unet runs the plain forward (nothing recomputed)."""
    ckpt = small_unet(gradient_checkpointing=True)
    calls = []
    ckpt.mid_block_1.register_forward_pre_hook(lambda *_: calls.append(1))
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([5])
    ckpt.eval()(x, t).sum().backward()
    with torch.no_grad():
        ckpt.train()(x, t)
    assert len(calls) == 2
    ckpt.train()(x, t).sum().backward()
    assert len(calls) == 4  # forward and its recomputation in backward


# ----- command line ---------------------------------------------------------------------------------------------


def test_cli_train_layout_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["train", "--dim", "8", "--dim-mults", "1,2", "--image-size", "8", "--resnet-blocks", "1,3",
         "--attention", "none,full", "--no-mid-attn", "--gradient-checkpointing"]
    )  # fmt: skip
    unet = build_diffusion(resolve_train_options(args)).model
    assert [len(level) - 2 for level in unet.downs] == [1, 3]
    assert isinstance(unet.downs[0][-2], nn.Identity) and isinstance(unet.mid_attn, nn.Identity)
    assert unet.gradient_checkpointing
    default = build_diffusion(resolve_train_options(parser.parse_args(["train", "--dim", "8"]))).model
    assert not default.gradient_checkpointing and isinstance(default.mid_attn, Attention)
    assert [len(level) - 2 for level in default.downs] == [2, 2, 2]
    one = resolve_train_options(parser.parse_args(["train", "--resnet-blocks", "1", "--attention", "linear"]))
    assert one.resnet_blocks == 1 and one.attention == "linear"


@pytest.mark.parametrize("flag, value", [("--resnet-blocks", "0"), ("--resnet-blocks", "a"), ("--attention", "soft")])
def test_cli_rejects_bad_layout_values(flag: str, value: str, capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", flag, value])
    assert flag in capsys.readouterr().err
