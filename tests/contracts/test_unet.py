"""Contract tests for denoising_diffusion.nn.Unet: shapes, input checks, config round trip, gradients, dropout."""

from __future__ import annotations

import json

import pytest
import torch

from denoising_diffusion.nn import Unet, sinusoidal_embedding


def tiny_unet(**kwargs) -> Unet:
    options = dict(dim=8, dim_mults=(1, 2, 4), resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    options.update(kwargs)
    return Unet(**options)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(16, 16), (16, 24), (8, 32)])
def test_output_shape(channels: int, size: tuple[int, int]) -> None:
    unet = tiny_unet(channels=channels)
    x = torch.randn(2, channels, *size)
    out = unet(x, torch.tensor([0, 999]))
    assert out.shape == (2, channels, *size)
    assert unet.out_dim == channels and unet.downsample_factor == 4


def test_learned_variance_doubles_output_channels() -> None:
    unet = tiny_unet(channels=3, learned_variance=True)
    assert unet.out_dim == 6 and unet.learned_variance
    assert unet(torch.randn(2, 3, 8, 8), torch.tensor([3, 4])).shape == (2, 6, 8, 8)


def test_explicit_out_dim_wins() -> None:
    unet = tiny_unet(channels=1, out_dim=5, learned_variance=True)
    assert unet(torch.randn(1, 1, 8, 8), torch.tensor([1])).shape[1] == 5


def test_self_condition() -> None:
    unet = tiny_unet(channels=3, self_condition=True)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 20])
    assert unet.init_conv.in_channels == 6
    assert unet(x, t).shape == (2, 3, 8, 8)
    cond = torch.randn_like(x)
    out = unet(x, t, cond)
    assert out.shape == (2, 3, 8, 8)
    torch.testing.assert_close(unet(x, t, None), unet(x, t, torch.zeros_like(x)))
    assert not torch.allclose(out, unet(x, t))


def test_self_cond_rejected_without_self_condition() -> None:
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="self_condition=False"):
        tiny_unet()(x, torch.tensor([1]), x)


def test_time_as_float_and_scalar() -> None:
    unet = tiny_unet().eval()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(unet(x, torch.tensor([7, 7])), unet(x, torch.tensor(7.0)))
    assert unet(x, torch.tensor([0.25, 0.5])).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="time must have shape"):
        unet(x, torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("size", [(30, 30), (16, 18), (2, 16)])
def test_non_divisible_size_raises(size: tuple[int, int]) -> None:
    unet = Unet(dim=8, dim_mults=(1, 2, 4, 8))
    with pytest.raises(ValueError) as info:
        unet(torch.randn(1, 3, *size), torch.tensor([1]))
    message = str(info.value)
    assert f"({size[0]}, {size[1]})" in message
    assert "8 = 2**(4 levels - 1)" in message and "multiples of 8" in message


def test_check_image_size_suggests_sizes() -> None:
    unet = Unet(dim=8, dim_mults=(1, 2, 4, 8))
    with pytest.raises(ValueError, match=r"such as 24 or 32"):
        unet.check_image_size(30, 30)
    with pytest.raises(ValueError, match=r"such as \(24, 16\) or \(32, 24\)"):
        unet.check_image_size(30, 20)
    unet.check_image_size(32, 64)  # fine: no error


def test_wrong_channel_count_raises() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny_unet()(torch.randn(1, 1, 8, 8), torch.tensor([1]))


@pytest.mark.parametrize(
    "kwargs", [dict(dim=12, resnet_block_groups=8), dict(dim=8, init_dim=6, resnet_block_groups=4)]
)
def test_bad_groups_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="resnet_block_groups") as info:
        Unet(**kwargs)
    assert f"dim={kwargs['dim']}" in str(info.value)


def test_config_round_trip() -> None:
    unet = tiny_unet(channels=1, self_condition=True, learned_variance=True, dropout=0.1, init_dim=12)
    config = json.loads(json.dumps(unet.config))
    rebuilt = Unet(**config)
    assert rebuilt.config == unet.config
    shapes = {k: v.shape for k, v in unet.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    rebuilt.load_state_dict(unet.state_dict())
    assert config["out_dim"] == 2 and config["dim_mults"] == [1, 2, 4]


def test_time_changes_output() -> None:
    unet = tiny_unet().eval()
    x = torch.randn(1, 3, 8, 8).expand(2, -1, -1, -1)
    out = unet(x, torch.tensor([1, 500]))
    assert not torch.allclose(out[0], out[1], atol=1e-5)


def test_sinusoidal_embedding() -> None:
    emb = sinusoidal_embedding(torch.tensor([0, 1, 999]), 16)
    assert emb.shape == (3, 16) and emb.dtype == torch.float32
    torch.testing.assert_close(emb[0], torch.cat((torch.zeros(8), torch.ones(8))))  # sin 0, cos 0
    assert sinusoidal_embedding(torch.tensor([0.5], dtype=torch.float64), 7).shape == (1, 7)


def test_gradients_reach_every_parameter() -> None:
    unet = tiny_unet(self_condition=True, learned_variance=True)
    x = torch.randn(2, 3, 8, 8)
    unet(x, torch.tensor([3, 700]), torch.randn_like(x)).sum().backward()
    missing = [name for name, p in unet.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    zero = [name for name, p in unet.named_parameters() if not p.grad.abs().sum() > 0]
    assert not zero, f"parameters with an all-zero gradient: {zero}"


def test_dropout_only_in_train_mode() -> None:
    unet = tiny_unet(dropout=0.5)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    unet.train()
    assert not torch.allclose(unet(x, t), unet(x, t))
    unet.eval()
    torch.testing.assert_close(unet(x, t), unet(x, t), rtol=0, atol=0)
    without = tiny_unet(dropout=0.0)
    without.load_state_dict(unet.state_dict())
    torch.testing.assert_close(without.train()(x, t), unet(x, t))


def test_channels_last_matches() -> None:
    unet = tiny_unet().eval()
    x, t = torch.randn(2, 3, 16, 8), torch.tensor([1, 2])
    expected = unet(x, t)
    unet = unet.to(memory_format=torch.channels_last)
    torch.testing.assert_close(unet(x.to(memory_format=torch.channels_last), t), expected, rtol=1e-4, atol=1e-5)


def test_tutorial_construction() -> None:
    unet = Unet(dim = 64, dim_mults = (1, 2, 4, 8))  # fmt: skip
    n_params = sum(p.numel() for p in unet.parameters())
    assert 32_000_000 < n_params < 39_500_000  # ~35.7M, matched to the reference implementation's size
    with torch.no_grad():
        out = unet(torch.randn(2, 3, 32, 32), torch.tensor([0, 999]))
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
