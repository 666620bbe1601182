"""Models shared as config.json + model.safetensors (pretrained.py): every registered kind round-trips to the same
outputs, the weights hold no pickle, a repo id resolves from a pre-filled Hugging Face cache with the Hub offline,
the upload runs against a stand-in for the Hub API, and bad sources are clear errors. Nothing here reaches the
network: every repo-id test sets the Hub offline, and the upload's HfApi is replaced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from safetensors import safe_open
from torch import nn

from denoising_diffusion import (
    Autoencoder,
    AutoencoderTraining,
    Cascade,
    DiffusersAutoencoder,
    LatentDiffusion,
    SuperResolution,
    from_pretrained,
    push_to_hub,
    save_pretrained,
)
from denoising_diffusion.checkpoint import CheckpointError
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.nn import EncoderClassifier, Unet
from denoising_diffusion.noise_aware_classifier import NoiseAwareClassifier
from denoising_diffusion.pipeline import discover_kinds, save_pipeline
from denoising_diffusion.pretrained import CONFIG_NAME, WEIGHTS_NAME, resolve_source
from denoising_diffusion.reflow import RectifiedFlow
from denoising_diffusion.registry import PretrainedMixin, model_kind, registered_kinds
from tests.hub_helpers import StandInApi, fill_cache, offline_cache, stand_in_hub


def unet(**kwargs: Any) -> Unet:
    return Unet(dim=8, dim_mults=(1, 2), channels=1, resnet_block_groups=4, attn_heads=2, attn_dim_head=8, **kwargs)


def diffusion(**kwargs: Any) -> GaussianDiffusion:
    network = kwargs.pop("network", None) or unet()
    return GaussianDiffusion(network, image_size=8, timesteps=10, **{"sampling_timesteps": 4, **kwargs})


def classifier_network() -> EncoderClassifier:
    return EncoderClassifier(8, num_classes=3, channels=1, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2,
                             attn_dim_head=8)  # fmt: skip


@model_kind("PretrainedTestStages", parts=("stages",))
class Stages(PretrainedMixin, nn.Module):
    """A composition as cascades and latent models are: a list of parts, each a registered kind, plus a buffer."""

    def __init__(self, stages: list[nn.Module], *, scale: float = 1.0) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.config = {"scale": scale}
        self.register_buffer("offset", torch.zeros(1))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.cat([s.sample(n, generator=generator) for s in self.stages]) * self.config["scale"] + self.offset


def stage(**kwargs: Any) -> SuperResolution:
    """An 8 -> 16 super-resolution stage of one channel."""
    network = unet(cond_image_channels=1, cond_level=True, image_null=True)
    return SuperResolution(
        GaussianDiffusion(network, image_size=16, timesteps=10, sampling_timesteps=3), low_res_size=8
    )


def autoencoder() -> Autoencoder:
    return Autoencoder(1, factor=2, latent_channels=2, dim=8, dim_mults=(1, 2), groups=4)


def diffusers_autoencoder() -> DiffusersAutoencoder:
    """A randomly initialised diffusers AutoencoderKL (f = 2) behind the adapter: its config alone builds it."""
    return DiffusersAutoencoder(dict(in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                     down_block_types=("DownEncoderBlock2D",) * 2, latent_channels=2,
                                     up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1,
                                     norm_num_groups=4, sample_size=8, scaling_factor=0.5))  # fmt: skip


def reconstruct(model: Any) -> torch.Tensor:
    """decode(the posterior mean of encode(x)): deterministic, through both halves."""
    return model.decode(model.encode(_x((2, 1, 8, 8))).mean)


def latent_diffusion() -> LatentDiffusion:
    network = Unet(dim=8, dim_mults=(1, 2), channels=2, resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    inner = GaussianDiffusion(network, image_size=4, timesteps=10, sampling_timesteps=3, auto_normalize=False,
                              clip_denoised=False)  # fmt: skip
    return LatentDiffusion(autoencoder(), inner, scale_factor=1.5)


def _randomized(model: nn.Module) -> nn.Module:
    """Weights and buffers away from their initial values (a Unet's last layer starts at zero), so that a load that
    kept the fresh model's weights would be seen."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=torch.Generator().manual_seed(tensor.numel())))
    return model


def _x(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(1))


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(3)


# Each kind: a tiny instance, and what it computes from a fixed input or generator.
OUTPUTS: dict[str, tuple[Callable[[], nn.Module], Callable[[Any], torch.Tensor]]] = {
    "Unet": (unet, lambda m: m(_x((2, 1, 8, 8)), torch.tensor([1, 7]))),
    "EncoderClassifier": (classifier_network, lambda m: m(_x((2, 1, 8, 8)), torch.tensor([1, 7]))),
    "GaussianDiffusion": (diffusion, lambda m: m.sample(2, generator=_gen())),
    "NoiseAwareClassifier": (
        lambda: NoiseAwareClassifier(classifier_network(), image_size=8, timesteps=10, class_names=["a", "b", "c"]),
        lambda m: m.logits(_x((2, 1, 8, 8)), torch.tensor([1, 7])),
    ),
    "PretrainedTestStages": (lambda: Stages([diffusion(), diffusion(objective="pred_v")], scale=2.0),
                             lambda m: m.sample(2, _gen())),
    "SuperResolution": (stage, lambda m: m.sample(low_res=_x((2, 1, 8, 8)), generator=_gen())),
    "Cascade": (lambda: Cascade([diffusion(), stage()], [None, {"steps": 2}]), lambda m: m.sample(2, generator=_gen())),
    "Autoencoder": (autoencoder, reconstruct),
    "AutoencoderTraining": (lambda: AutoencoderTraining(autoencoder(), image_size=8), lambda m: reconstruct(m.model)),
    "DiffusersAutoencoder": (diffusers_autoencoder, reconstruct),
    "LatentDiffusion": (latent_diffusion, lambda m: m.sample(2, sampler="ddim", steps=3, generator=_gen())),
    "RectifiedFlow": (lambda: RectifiedFlow(unet(), image_size=8, process="flow", sampling_timesteps=3),
                      lambda m: m.sample(2, generator=_gen())),
}  # fmt: skip
VARIANTS = {  # GaussianDiffusion's other recorded state: conditions and class names, another process, learned variances
    "class-conditional": (lambda: diffusion(network=unet(num_classes=3), class_names=["x", "y", "z"]),
                          lambda m: m.sample(3, generator=_gen(), classes=["z", "x", "y"], guidance_scale=2.0)),
    "ve, fitted sigma_max": (lambda: diffusion(process="ve", process_options={"sigma_max": 3.0}),
                             lambda m: m.sample(2, generator=_gen())),
    "learned variance": (lambda: diffusion(network=unet(learned_variance=True), sampling_timesteps=10),
                         lambda m: m.sample(2, generator=_gen())),
}  # fmt: skip


def test_every_kind_of_the_package_is_covered_and_has_the_methods() -> None:
    """A kind added to the package (a cascade, a latent model) needs an entry in OUTPUTS and the mixin."""
    discover_kinds()
    from denoising_diffusion.registry import kind_named

    package_kinds = [n for n in registered_kinds() if kind_named(n).cls.__module__.startswith("denoising_diffusion.")]
    assert set(package_kinds) <= set(OUTPUTS), "add a tiny instance of each new kind to OUTPUTS"
    assert [n for n in package_kinds if not issubclass(kind_named(n).cls, PretrainedMixin)] == []


@pytest.mark.parametrize("name", [*OUTPUTS, *VARIANTS])
def test_save_then_load_gives_the_same_outputs(tmp_path: Path, name: str) -> None:
    make, output = {**OUTPUTS, **VARIANTS}[name]
    model = _randomized(make()).eval()
    assert model.save_pretrained(tmp_path / "m") == tmp_path / "m"
    loaded = type(model).from_pretrained(tmp_path / "m")
    assert type(loaded) is type(model) and not loaded.training
    with torch.no_grad():
        assert torch.equal(output(loaded), output(model))
    assert torch.equal(output(from_pretrained(tmp_path / "m")), output(model))  # the function: any kind


def test_the_files_are_json_and_safetensors_with_no_pickle(tmp_path: Path) -> None:
    model = _randomized(diffusion())
    save_pretrained(model, tmp_path)
    raw = (tmp_path / WEIGHTS_NAME).read_bytes()
    header = int.from_bytes(raw[:8], "little")  # safetensors: u64 header length, a JSON header, raw tensor bytes
    assert json.loads(raw[8 : 8 + header])["__metadata__"]["kind"] == "GaussianDiffusion"
    assert not raw.startswith(b"PK") and b"\x80\x02" not in raw[:16]  # neither a torch zip nor a pickle
    with safe_open(tmp_path / WEIGHTS_NAME, framework="pt") as f:
        stored = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    state = model.state_dict()
    assert stored.keys() == state.keys() and all(torch.equal(stored[k], state[k]) for k in state)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["format"] == "denoising_diffusion.pretrained" and config["spec"]["model"]["kind"] == "Unet"
    assert "library_name: denoising-diffusion" in (tmp_path / "README.md").read_text()


def test_saving_again_replaces_its_own_files_but_never_another_librarys(tmp_path: Path) -> None:
    first, second = _randomized(diffusion()), diffusion(objective="pred_x0")
    save_pretrained(first, tmp_path / "m")
    save_pretrained(second, tmp_path / "m")
    assert from_pretrained(tmp_path / "m").config["objective"] == "pred_x0"
    (tmp_path / "m" / "README.md").write_text("my own model card")  # the user's card is kept, ours replaced
    save_pretrained(first, tmp_path / "m")
    assert (tmp_path / "m" / "README.md").read_text() == "my own model card"
    (tmp_path / "other").mkdir()
    foreign = '{"_class_name": "UNet2DModel"}'
    (tmp_path / "other" / CONFIG_NAME).write_text(foreign)
    with pytest.raises(ValueError, match="was not written by save_pretrained; it is left alone"):
        save_pretrained(first, tmp_path / "other")
    assert (tmp_path / "other" / CONFIG_NAME).read_text() == foreign
    assert not (tmp_path / "other" / WEIGHTS_NAME).exists()


# ----- the Hub: a pre-filled cache, offline; the upload against a stand-in ----------------------------------------


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return offline_cache(tmp_path, monkeypatch)


def test_a_repo_id_resolves_from_the_cache_with_the_hub_offline(tmp_path: Path, offline_hub: Path) -> None:
    model = _randomized(diffusion())
    fill_cache(offline_hub, "someone/tiny-shapes", save_pretrained(model, tmp_path / "saved"))
    loaded = GaussianDiffusion.from_pretrained("someone/tiny-shapes")
    assert torch.equal(loaded.sample(2, generator=_gen()), model.sample(2, generator=_gen()))
    source = resolve_source("someone/tiny-shapes")  # the command line's resolver
    assert source.pretrained and source.path.parent.parent == offline_hub / "models--someone--tiny-shapes"
    assert source.spec()["kind"] == "GaussianDiffusion"


def test_a_repo_id_not_cached_while_offline_is_a_clear_error(offline_hub: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        from_pretrained("someone/not-downloaded")
    message = str(err.value)
    assert "'someone/not-downloaded' is no local directory" in message and "not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=1" in message and str(offline_hub) in message


def test_push_to_hub_uploads_the_saved_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_hub(monkeypatch)
    model = _randomized(diffusion())
    url = model.push_to_hub("someone/tiny", private=True, token="hf_test")
    assert url == "https://huggingface.co/someone/tiny/commit/abc"
    names = [name for name, _ in StandInApi.calls]
    assert names == ["init", "create_repo", "upload_folder"]
    assert StandInApi.calls[0][1]["token"] == "hf_test"
    assert StandInApi.calls[1][1] == dict(repo_id="someone/tiny", private=True, exist_ok=True, repo_type="model")
    assert sorted(StandInApi.uploaded) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    assert 'from_pretrained("someone/tiny")' in StandInApi.uploaded["README.md"].decode()
    # what was uploaded is the model: write it back as a snapshot and load it
    (tmp_path / "back").mkdir()
    for name, data in StandInApi.uploaded.items():
        (tmp_path / "back" / name).write_bytes(data)
    back = from_pretrained(tmp_path / "back")
    assert torch.equal(back.sample(2, generator=_gen()), model.sample(2, generator=_gen()))
    with pytest.raises(ValueError, match="repo_id must read namespace/name"):
        push_to_hub(model, "no-namespace")
    assert len(StandInApi.calls) == 3  # refused before any call


# ----- bad sources ----------------------------------------------------------------------------------------------


def test_a_directory_that_is_not_a_saved_model_is_a_clear_error(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    save_pipeline(diffusion(), results / "model-3.pt")
    with pytest.raises(CheckpointError, match=r"is not a saved model: it has no config\.json .*e\.g\. model-3\.pt"):
        from_pretrained(results)
    with pytest.raises(CheckpointError, match="is not a saved model"):
        resolve_source(results)
    (results / CONFIG_NAME).write_text('{"_class_name": "UNet2DModel"}')
    with pytest.raises(CheckpointError, match="was not written by save_pretrained"):
        from_pretrained(results)
    with pytest.raises(CheckpointError, match="is a file, not a saved model's directory"):
        from_pretrained(results / "model-3.pt")
    with pytest.raises(CheckpointError, match="no such directory: 'nowhere'"):
        from_pretrained("nowhere")


def test_weights_that_do_not_fit_and_the_wrong_class_are_named(tmp_path: Path) -> None:
    save_pretrained(diffusion(), tmp_path / "a")
    save_pretrained(diffusion(network=unet(learned_variance=True)), tmp_path / "b")
    shutil.copy(tmp_path / "b" / WEIGHTS_NAME, tmp_path / "a" / WEIGHTS_NAME)
    with pytest.raises(CheckpointError, match=r"does not fit the model .* other shapes \['model\.final_conv\.weight"):
        from_pretrained(tmp_path / "a")
    with pytest.raises(CheckpointError, match="holds a GaussianDiffusion, not a Unet"):
        Unet.from_pretrained(tmp_path / "b")
    (tmp_path / "b" / WEIGHTS_NAME).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
        from_pretrained(tmp_path / "b")


def test_a_class_loads_its_saved_subclasses_and_refuses_other_kinds(tmp_path: Path) -> None:
    """Class.from_pretrained takes any model that is a Class: a saved RectifiedFlow through GaussianDiffusion's
    (the same outputs), and refuses one that is not (a SuperResolution's), naming both."""
    model = _randomized(RectifiedFlow(unet(), image_size=8, process="flow", sampling_timesteps=3)).eval()
    save_pretrained(model, tmp_path / "rf")
    loaded = GaussianDiffusion.from_pretrained(tmp_path / "rf")
    assert type(loaded) is RectifiedFlow
    assert torch.equal(loaded.sample(2, generator=_gen()), model.sample(2, generator=_gen()))
    with pytest.raises(CheckpointError, match="holds a RectifiedFlow, not a SuperResolution"):
        SuperResolution.from_pretrained(tmp_path / "rf")


def test_an_unregistered_part_is_refused_before_writing(tmp_path: Path) -> None:
    class PlainNet(nn.Module):
        channels, self_condition, learned_variance = 1, False, False

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(ValueError, match="cannot save 'model: PlainNet'|cannot save model: 'PlainNet'"):
        save_pretrained(diffusion(network=PlainNet()), tmp_path / "m")
    assert not (tmp_path / "m").exists()
