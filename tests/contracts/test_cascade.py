"""The contracts of super-resolution stages and cascades (docs/cascade.md): the image's null in the Unet, the level
reaching the network, classes reaching every stage that takes them, per-stage options, a cascade saved as one file
and rebuilt from it alone, and the errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from denoising_diffusion import Cascade, GaussianDiffusion, SuperResolution, Unet, load_pipeline, save_pipeline
from denoising_diffusion.cascade import SAMPLE_LEVEL

SMALL = {"dim": 8, "dim_mults": (1, 2), "resnet_block_groups": 4, "attn_heads": 2, "attn_dim_head": 8}


def unet(seed: int = 0, **kwargs) -> Unet:
    torch.manual_seed(seed)
    net = Unet(**{**SMALL, **kwargs})
    with torch.no_grad():  # away from the zero-initialised output layer, so that every input matters
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def base(size: int = 8, **kwargs) -> GaussianDiffusion:
    return GaussianDiffusion(unet(**kwargs), image_size=size, timesteps=10)


def stage(low: int = 8, high: int = 16, seed: int = 1, stage_options: dict | None = None, **kwargs) -> SuperResolution:
    net = unet(seed, cond_image_channels=3, cond_level=True, image_null=True, **kwargs)
    return SuperResolution(GaussianDiffusion(net, image_size=high, timesteps=10), low_res_size=low,
                           **(stage_options or {}))  # fmt: skip


def test_the_null_image_drops_the_image_and_the_level_and_only_where_asked() -> None:
    net = unet(cond_image_channels=3, cond_level=True, image_null=True)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 8, 8, generator=g), torch.tensor([3, 7])
    image, other = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    level, drop = torch.tensor([0.1, 0.2]), torch.tensor([True, False])
    with torch.no_grad():
        out = net(x, t, cond_image=image, cond_level=level, drop=drop)
        changed = net(x, t, cond_image=other, cond_level=torch.tensor([0.4, 0.3]), drop=drop)
        kept = net(x, t, cond_image=image, cond_level=level)
    torch.testing.assert_close(out[0], changed[0])  # dropped: nothing of the image or the level is left
    assert not torch.allclose(out[1], changed[1])  # kept: both matter
    torch.testing.assert_close(out[1], kept[1])
    assert not torch.allclose(out[0], kept[0])
    assert net.config["image_null"] is True and net.condition_spec.droppable == ("cond_image", "cond_level")
    plain = unet(cond_image_channels=3, cond_level=True)  # without image_null the image is never dropped
    with torch.no_grad():
        torch.testing.assert_close(plain(x, t, cond_image=image, cond_level=level, drop=drop),
                                   plain(x, t, cond_image=image, cond_level=level))  # fmt: skip
    assert "image_null" not in plain.config
    with pytest.raises(ValueError, match="image_null=True needs an image condition"):
        Unet(8, image_null=True)


def test_the_level_reaches_the_network_and_changing_it_changes_the_output() -> None:
    sr = stage()
    low = torch.rand(2, 3, 8, 8)
    outs = [sr.sample(low_res=low, level=level, steps=2, generator=torch.Generator().manual_seed(0))
            for level in (0.0, 0.0, 0.3)]  # fmt: skip
    assert torch.equal(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])
    x, t, z = torch.randn(2, 3, 16, 16), torch.tensor([4, 4]), torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        a = sr.diffusion.denoiser(cond_image=z, cond_level=torch.tensor([0.1, 0.1]))(x, t).eps
        b = sr.diffusion.denoiser(cond_image=z, cond_level=torch.tensor([0.4, 0.4]))(x, t).eps
    assert not torch.allclose(a, b)
    assert sr.sample_level == SAMPLE_LEVEL and sr.config["noise_levels"] == [0.0, 0.5]


def test_classes_reach_every_stage_that_takes_them() -> None:
    calls: dict[int, list] = {0: [], 1: [], 2: []}
    models = [base(num_classes=3), stage(num_classes=3), stage(16, 32, seed=2)]
    for index, model in enumerate(models):
        model.model.register_forward_pre_hook(
            lambda m, args, kwargs, i=index: calls[i].append(kwargs.get("classes")), with_kwargs=True
        )
    cascade = Cascade(models)
    out = cascade.sample(3, classes=[2, 0, 1], generator=torch.Generator().manual_seed(0),
                         stages=[{"steps": 2}, {"steps": 2}, {"steps": 3}])  # fmt: skip
    assert out.shape == (3, 3, 32, 32)
    assert [len(calls[i]) for i in range(3)] == [2, 2, 3]  # each stage's own steps (DDIM: one call per step)
    assert all(torch.equal(c, torch.tensor([2, 0, 1])) for i in (0, 1) for c in calls[i])
    assert calls[2] == [None] * 3  # the stage without classes gets none
    with pytest.raises(ValueError, match="no stage of this cascade takes class labels"):
        Cascade([base(), stage()]).sample(1, classes=[0])
    with pytest.raises(ValueError, match="the stages that take classes must take the same ones"):
        Cascade([base(num_classes=3), stage(num_classes=4)])


def test_guidance_on_a_stage_uses_both_branches_and_scale_one_is_the_conditional_model() -> None:
    sr, low = stage(), torch.rand(2, 3, 8, 8)
    runs = {s: sr.sample(low_res=low, steps=2, guidance_scale=s, generator=torch.Generator().manual_seed(0))
            for s in (1.0, 3.0)}  # fmt: skip
    assert not torch.allclose(runs[1.0], runs[3.0])
    unguidable = SuperResolution(
        GaussianDiffusion(unet(cond_image_channels=3, cond_level=True), image_size=16, timesteps=10), low_res_size=8
    )
    with pytest.raises(ValueError, match="image_null="):
        unguidable.sample(low_res=low, guidance_scale=2.0)
    by_class = SuperResolution(GaussianDiffusion(unet(cond_image_channels=3, cond_level=True, num_classes=2),
                                                 image_size=16, timesteps=10), low_res_size=8)  # fmt: skip
    guided = by_class.sample(low_res=low, classes=[0, 1], steps=2, guidance_scale=3.0)  # on the classes only
    assert guided.shape == (2, 3, 16, 16) and by_class.diffusion.condition_spec.droppable == ("classes",)


def test_a_cascade_saves_as_one_file_rebuilds_from_it_alone_and_samples_the_same(tmp_path: Path) -> None:
    options = [{"sampler": "ddim", "steps": 3}, {"sampler": "ddpm", "steps": 4, "level": 0.2, "guidance_scale": 2.0}]
    cascade = Cascade([base(num_classes=3), stage(num_classes=3)], sampling=options)
    path = save_pipeline(cascade, tmp_path / "cascade.pt")
    rebuilt = load_pipeline(path)
    assert type(rebuilt) is Cascade and rebuilt.sampling == options and rebuilt is not cascade
    assert [type(s).__name__ for s in rebuilt.stages] == ["GaussianDiffusion", "SuperResolution"]
    draws = [m.sample(2, classes=[1, 2], generator=torch.Generator().manual_seed(5), return_stages=True)
             for m in (cascade, rebuilt)]  # fmt: skip
    explicit = Cascade(list(cascade.stages)).sample(2, classes=[1, 2], generator=torch.Generator().manual_seed(5),
                                                    stages=options, return_stages=True)  # fmt: skip
    for ours, theirs, given in zip(*draws, explicit):  # the stored options are the ones used
        assert torch.equal(ours, theirs) and torch.equal(ours, given)
    assert draws[0][0].shape == (2, 3, 8, 8) and draws[0][1].shape == (2, 3, 16, 16)


@pytest.mark.parametrize("make,message", [
    (lambda: Cascade([base(16), stage(8, 16)]), r"do not chain: stage 1 \(super-resolution 8x8 -> 16x16\) takes "
     r"3-channel 8x8 images, but stage 0 \(the base, 16x16\) makes 3-channel 16x16 ones"),
    (lambda: Cascade([base(8), stage(8, 16), stage(8, 32, seed=2)]), "do not chain: stage 2"),
    (lambda: Cascade([base(8)]), "at least one super-resolution stage, got 1"),
    (lambda: Cascade([stage(), stage(16, 32)]), "stage 0 must be a base model"),
    (lambda: Cascade([base(8), base(16)]), "stage 1 must be a super-resolution stage, got a GaussianDiffusion"),
    (lambda: stage(12, 32), r"low_res_size 12 must be smaller than the stage's image_size 32 and divide it"),
    (lambda: stage(16, 16), r"low_res_size 16 must be smaller"),
    (lambda: stage(stage_options={"sample_level": 0.7}), r"augmentation level 0.7 is outside \[0, 0.5\]"),
    (lambda: stage(stage_options={"noise_levels": (0.5, 0.2)}), r"noise_levels must satisfy 0 <= lo <= hi <= 1"),
    (lambda: stage(stage_options={"noise_levels": (0.0, 1.5)}), r"noise_levels must satisfy 0 <= lo <= hi <= 1"),
    (lambda: stage(stage_options={"blur_sigma": (-1, 0.5)}), r"blur_sigma must satisfy 0 <= lo <= hi"),
    (lambda: stage().sample(low_res=torch.rand(1, 3, 8, 8), level=0.6), r"level 0.6 is outside \[0, 0.5\]"),
    (lambda: stage().sample(low_res=torch.rand(1, 3, 4, 4)), r"low_res must have shape \(B, 3, 8, 8\)"),
    (lambda: stage().sample(2), "samples from low-resolution images: pass low_res="),
    (lambda: SuperResolution(base(16), low_res_size=8), "must take the upsampled low-resolution image"),
    (lambda: Cascade([base(8), stage()], sampling=[{"level": 0.1}, {}]), r"sampling\[0\].*takes no augmentation"),
    (lambda: Cascade([base(8), stage()], sampling=[{}, {"level": 0.9}]), r"level 0.9 is outside"),
    (lambda: Cascade([base(8), stage()], sampling=[{"stepz": 3}, {}]), r"unknown option 'stepz'"),
    (lambda: Cascade([base(8), stage()]).sample(1, stages=[{}]), "one dict of options per stage"),
])  # fmt: skip
def test_bad_input_is_a_clear_error(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_a_file_that_is_not_a_stage_is_refused_by_name(tmp_path: Path) -> None:
    base_file = save_pipeline(base(8), tmp_path / "base.pt")
    stage_file = save_pipeline(stage(), tmp_path / "stage.pt")
    with pytest.raises(ValueError, match=r"base\.pt holds a GaussianDiffusion, not a super-resolution stage"):
        Cascade.from_checkpoints([base_file, base_file])
    with pytest.raises(ValueError, match=r"stage\.pt holds a super-resolution stage; the first file must be the base"):
        Cascade.from_checkpoints([stage_file, stage_file])
    cascade = Cascade.from_checkpoints([base_file, stage_file])
    assert [type(s).__name__ for s in cascade.stages] == ["GaussianDiffusion", "SuperResolution"]


def test_a_stage_of_another_channel_count_does_not_chain() -> None:
    """Sizes that chain are not enough: a grey stage (1 channel in, 1 out) after an RGB base is refused, naming both
    channel counts (it would fail only when sampling, on the concatenated input)."""
    net = unet(1, channels=1, cond_image_channels=1, cond_level=True)
    grey = SuperResolution(GaussianDiffusion(net, image_size=16, timesteps=10), low_res_size=8)
    message = (r"do not chain: stage 1 \(super-resolution 8x8 -> 16x16\) takes 1-channel 8x8 images, but stage 0 "
               r"\(the base, 8x8\) makes 3-channel 8x8 ones")  # fmt: skip
    with pytest.raises(ValueError, match=message):
        Cascade([base(8), grey])
