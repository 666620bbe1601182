"""Conditioning through Unet, GaussianDiffusion and the Trainer: each kind of condition reaches the output, the
nulls replace it where dropped, the drop rate is the one asked for, classifier-free guidance combines the two
branches of one batched call exactly, and every kind of bad input is a clear error."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from trainer_helpers import isolated_accelerate, make_trainer  # noqa: F401 (autouse fixture)

from denoising_diffusion.checkpoint import load_checkpoint
from denoising_diffusion.conditioning import ConditionSpec
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.nn.unet import Unet
from denoising_diffusion.pipeline import load_pipeline

SMALL = {"dim": 8, "dim_mults": (1, 2), "resnet_block_groups": 4, "attn_heads": 2, "attn_dim_head": 8}


def unet(**kwargs) -> Unet:
    torch.manual_seed(0)
    return Unet(**{**SMALL, **kwargs})


def inputs(batch: int = 2) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, 8, 8, generator=g), torch.tensor([3, 7])[:batch]


# ----- the network -------------------------------------------------------------------------------------------------


def test_an_unconditional_unet_is_unchanged_by_the_new_options() -> None:
    net = unet()
    assert net.condition_spec == ConditionSpec() and net.cond_drop_prob == 0.0
    assert not [k for k in net.state_dict() if any(w in k for w in ("class_", "cross", "null_", "level_"))]
    assert set(net.config) == {"dim", "init_dim", "out_dim", "dim_mults", "channels", "self_condition",
                               "learned_variance", "resnet_block_groups", "attn_heads", "attn_dim_head", "full_attn",
                               "dropout"}  # fmt: skip


def test_each_condition_reaches_the_output() -> None:
    net = unet(num_classes=4, context_dim=6, cond_image_channels=2, cond_level=True).eval()
    x, t = inputs()
    g = torch.Generator().manual_seed(2)
    cond = {"classes": torch.tensor([0, 1]), "context": torch.randn(2, 5, 6, generator=g),
            "cond_image": torch.randn(2, 2, 8, 8, generator=g), "cond_level": torch.tensor([0.1, 0.7])}  # fmt: skip
    base = net(x, t, **cond)
    # a new context: LayerNorm makes a shifted or scaled context the same one
    changed = {"classes": torch.tensor([2, 3]), "context": torch.randn(2, 5, 6, generator=g),
               "cond_image": cond["cond_image"] * -1, "cond_level": torch.tensor([0.5, 0.2])}  # fmt: skip
    for name, value in changed.items():
        out = net(x, t, **{**cond, name: value})
        assert (out - base).abs().amax(dim=(1, 2, 3)).min() > 1e-4, f"{name} does not change every sample's output"


def test_masked_context_tokens_and_dropped_conditions_do_not_reach_the_output() -> None:
    net = unet(num_classes=4, context_dim=6).eval()
    x, t = inputs()
    g = torch.Generator().manual_seed(3)
    context = torch.randn(2, 5, 6, generator=g)
    mask = torch.tensor([[True, True, False, False, True], [True, False, False, False, False]])
    base = net(x, t, classes=torch.tensor([0, 1]), context=context, context_mask=mask)
    other = context.clone()
    other[~mask] = 100.0  # only masked-out tokens change
    torch.testing.assert_close(net(x, t, classes=torch.tensor([0, 1]), context=other, context_mask=mask), base)
    drop = torch.tensor([True, False])
    dropped = net(x, t, classes=torch.tensor([0, 1]), context=context, drop=drop)
    fresh = torch.randn(2, 5, 6, generator=g)  # (LayerNorm makes a scaled or shifted context the same one)
    again = net(x, t, classes=torch.tensor([3, 1]), context=fresh, drop=drop)  # sample 0 dropped: ignored
    torch.testing.assert_close(again[0], dropped[0])
    assert (again[1] - dropped[1]).abs().max() > 1e-4


def test_the_unet_refuses_conditions_it_does_not_take_and_requires_those_it_does() -> None:
    x, t = inputs()
    with pytest.raises(ValueError, match=r"takes no condition; missing: none, not taken: \['classes'\]"):
        unet()(x, t, classes=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"takes num_classes=4; missing: \['classes'\]"):
        unet(num_classes=4)(x, t)
    for bad, message in [
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"num_classes": 3, "cond_drop_prob": 1.0}, r"cond_drop_prob must be in \[0, 1\)"),
        ({"context_dim": 4, "cross_attn": (True,)}, "cross_attn needs one flag per level"),
    ]:
        with pytest.raises(ValueError, match=message):
            unet(**bad)


# ----- GaussianDiffusion -------------------------------------------------------------------------------------------


class Recorder(nn.Module):
    """A network that records the drop masks it is given and outputs a function of its conditional inputs."""

    channels, self_condition, learned_variance = 3, False, False
    condition_spec = ConditionSpec(num_classes=5)

    def __init__(self, cond_drop_prob: float) -> None:
        super().__init__()
        self.cond_drop_prob = cond_drop_prob
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.drops: list[Tensor] = []

    def forward(self, x, t, *, classes, drop=None):
        if drop is not None:
            self.drops.append(drop.clone())
        label = torch.where(drop, -1, classes) if drop is not None else classes
        return self.scale * x + 0.1 * label.float()[:, None, None, None]


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_the_condition_is_dropped_at_the_given_rate(rate: float) -> None:
    net = Recorder(rate)
    d = GaussianDiffusion(net, image_size=4, timesteps=10)
    torch.manual_seed(4)
    for _ in range(40):
        d(torch.rand(100, 3, 4, 4), classes=torch.randint(0, 5, (100,)))
    if rate == 0.0:
        assert net.drops == []  # no mask at all: the null branch is never trained
        return
    dropped = torch.cat(net.drops).float()
    assert len(dropped) == 4000
    standard_error = math.sqrt(rate * (1 - rate) / len(dropped))
    assert abs(float(dropped.mean()) - rate) < 4 * standard_error, float(dropped.mean())


def test_guidance_combines_the_two_branches_of_one_call_exactly() -> None:
    """pred_noise: the network's output is ε̂, so the guided ε̃ must be (1 − s) ε̂(x | ∅) + s ε̂(x | y) of the very
    network calls, for s = 0, 1 and 2.5 (clipping off); one batched call per step."""
    net = unet(num_classes=4).eval()
    d = GaussianDiffusion(net, image_size=8, timesteps=10, clip_denoised=False)
    x, t = inputs()
    y = torch.tensor([1, 2])
    with torch.no_grad():
        eps_c = net(x, t, classes=y)
        eps_u = net(x, t, classes=y, drop=torch.ones(2, dtype=torch.bool))
        for s in (0.0, 1.0, 2.5):
            pred = d.denoiser(classes=y, guidance_scale=s)(x, t)
            torch.testing.assert_close(pred.eps, (1 - s) * eps_u + s * eps_c, rtol=1e-5, atol=1e-6)
    calls = []
    handle = net.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        d.denoiser(classes=y, guidance_scale=3.0)(x, t)
    handle.remove()
    assert calls == [4]  # one call on [x; x]


def test_guided_predictions_are_clipped_and_take_the_conditional_variance() -> None:
    net = unet(num_classes=4, learned_variance=True).eval()
    d = GaussianDiffusion(net, image_size=8, timesteps=10, objective="pred_x0")
    x, t = inputs()
    y = torch.tensor([0, 3])
    with torch.no_grad():
        pred = d.denoiser(classes=y, guidance_scale=4.0)(x * 5, t)
        var_c = net(x * 5, t, classes=y).chunk(2, dim=1)[1]
    assert pred.x0.abs().max() <= 1.0
    torch.testing.assert_close(pred.var_interp, var_c)


def test_every_sampler_runs_guided_with_self_conditioning() -> None:
    d = GaussianDiffusion(unet(num_classes=3, self_condition=True), image_size=8, timesteps=10)
    for sampler in ("ddpm", "ddim", "dpmpp_2m", "heun"):
        out = d.sample(3, sampler=sampler, steps=3, classes=[0, 1, 2], guidance_scale=2.0, guidance_rescale=0.7)
        assert out.shape == (3, 3, 8, 8) and bool(torch.isfinite(out).all())


def test_guidance_without_a_trained_null_warns_and_unguidable_models_refuse() -> None:
    d = GaussianDiffusion(unet(num_classes=3, cond_drop_prob=0.0), image_size=8, timesteps=10)
    with pytest.warns(UserWarning, match="cond_drop_prob=0: its null class/context was never trained"):
        d.sample(1, classes=1, guidance_scale=2.0, steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d.sample(1, classes=1, steps=2)  # s = 1: the conditional model as it is
    image_only = GaussianDiffusion(unet(cond_image_channels=1), image_size=8, timesteps=10)
    with pytest.raises(ValueError, match="guidance needs a model with classes, a context or an image with a null"):
        image_only.sample(1, cond_image=torch.zeros(1, 1, 8, 8), guidance_scale=2.0)


@pytest.mark.parametrize("kwargs,message", [
    ({}, r"built with num_classes=3, context_dim=6: pass classes=, context="),
    ({"classes": 3, "context": torch.zeros(1, 2, 6)}, r"class label 3 is outside \[0, 3\)"),
    ({"classes": "dog", "context": torch.zeros(1, 2, 6)}, "unknown class 'dog'; known classes: 'ant', 'bee', 'cat'"),
    ({"classes": 1, "context": torch.zeros(2, 2, 5)}, r"context must have shape \(2, L, 6\)"),
    ({"classes": 1, "context": torch.zeros(2, 2, 6), "context_mask": torch.ones(2, 3, dtype=torch.bool)},
     "context_mask has 3 tokens but context has 2"),
    ({"classes": 1, "context": torch.zeros(2, 2, 6), "cond_image": torch.zeros(2, 1, 8, 8)},
     r"cannot be given 'cond_image'"),
    ({"classes": 1.5, "context": torch.zeros(2, 2, 6)}, "classes must be integer labels"),
])  # fmt: skip
def test_bad_conditions_are_clear_errors(kwargs: dict, message: str) -> None:
    d = GaussianDiffusion(
        unet(num_classes=3, context_dim=6), image_size=8, timesteps=10, class_names=["ant", "bee", "cat"]
    )
    with pytest.raises(ValueError, match=message):
        d.sample(2, steps=2, **kwargs)


def test_an_unconditional_model_refuses_a_condition_and_bad_class_names_are_refused() -> None:
    d = GaussianDiffusion(unet(), image_size=8, timesteps=10)
    with pytest.raises(ValueError, match="takes no condition, so it cannot be given 'classes'"):
        d(torch.rand(2, 3, 8, 8), classes=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class_names were given, but the network takes no classes"):
        GaussianDiffusion(unet(), image_size=8, timesteps=10, class_names=["a"])
    with pytest.raises(ValueError, match="class_names must be 3 distinct names"):
        GaussianDiffusion(unet(num_classes=3), image_size=8, timesteps=10, class_names=["a", "a", "b"])


def test_batches_carry_the_condition() -> None:
    """An (image, label) batch and a dict batch train with their labels and context, as the explicit call does."""
    d = GaussianDiffusion(unet(num_classes=3, context_dim=4), image_size=8, timesteps=10)
    images, labels, context = torch.rand(2, 3, 8, 8), torch.tensor([2, 0]), torch.randn(2, 3, 4)
    losses = []
    for batch, extra in [
        ({"image": images, "label": labels, "context": context, "caption": ["a", "b"]}, {}),
        ([images, labels], {"context": context}),
        (images, {"classes": labels, "context": context}),
    ]:
        torch.manual_seed(5)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            losses.append(float(d(batch, **extra)))
        assert [str(w.message) for w in caught if "dropped" in str(w.message)] == (
            [
                "this GaussianDiffusion takes num_classes=3, context_dim=4, so the batch's entry 'caption' (a list) is "
                "dropped"
            ]
            if isinstance(batch, dict)
            else []
        )
    assert losses[0] == losses[1] == losses[2]


# ----- Trainer and checkpoints -------------------------------------------------------------------------------------


def test_a_class_conditional_model_trains_previews_classes_in_rows_and_samples_by_name(tmp_path: Path) -> None:
    images, labels = torch.rand(12, 3, 8, 8), torch.arange(12) % 3
    d = GaussianDiffusion(
        unet(num_classes=3), image_size=8, timesteps=10, sampling_timesteps=3, class_names=["ant", "bee", "cat"]
    )
    trainer = make_trainer(
        d, TensorDataset(images, labels), tmp_path / "r", train_num_steps=2, num_samples=7, sample_guidance_scale=2.0
    )
    trainer.train()
    from PIL import Image

    with Image.open(tmp_path / "r" / "sample-1.png") as grid:  # 3 rows (classes) of 7 // 3 = 2 images
        assert grid.size == (2 + 2 * (8 + 2), 2 + 3 * (8 + 2))
    spec = load_checkpoint(tmp_path / "r" / "model-1.pt")["config"]
    assert spec["class_names"] == ["ant", "bee", "cat"] and spec["model"]["num_classes"] == 3
    loaded = load_pipeline(tmp_path / "r" / "model-1.pt")
    out = loaded.sample(4, classes="cat", guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 8, 8)
    with pytest.raises(ValueError, match="the dataset has 3 classes .* but the model was built with num_classes=5"):
        dataset = TensorDataset(images, labels)
        dataset.classes = ["ant", "bee", "cat"]  # as a labelled folder has
        make_trainer(GaussianDiffusion(unet(num_classes=5), image_size=8, timesteps=10), dataset, tmp_path / "x")


def test_likelihoods_of_a_conditional_model_take_the_condition() -> None:
    from denoising_diffusion.likelihood import bits_per_dim, ode_bits_per_dim

    d = GaussianDiffusion(unet(num_classes=3), image_size=8, timesteps=10)
    x = torch.rand(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    a = bits_per_dim(d, x, classes=torch.tensor([0, 0]), generator=g)
    b = bits_per_dim(d, x, classes=torch.tensor([2, 2]), generator=torch.Generator().manual_seed(0))
    assert a.shape == (2,) and (a - b).abs().min() > 0  # the bound of p(x | y) depends on y
    assert ode_bits_per_dim(d, x, steps=3, classes=1).shape == (2,)
    with pytest.raises(ValueError, match="pass classes="):
        bits_per_dim(d, x)


def test_sampling_details_found_by_the_benchmark() -> None:
    """NumPy labels sample; a label count other than the batch and a non-finite scale are named up front; the
    drop rate has one home (the network); s = 0 runs only the null branch."""
    import numpy as np

    d = GaussianDiffusion(unet(num_classes=3), image_size=8, timesteps=10)
    assert d.sample(2, classes=np.array([0, 2]), steps=2).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"classes must have shape \(4,\) \(one label per image\), got \(2,\)"):
        d.sample(4, classes=torch.tensor([0, 1]), steps=2)
    with pytest.raises(ValueError, match="guidance_scale must be a finite number"):
        d.sample(2, classes=1, guidance_scale=float("nan"))
    d.model.cond_drop_prob = 0.25
    assert d.cond_drop_prob == 0.25
    calls = []
    handle = d.model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        d.denoiser(classes=torch.tensor([0, 1]), guidance_scale=0.0)(*inputs())
    handle.remove()
    assert calls == [2]
