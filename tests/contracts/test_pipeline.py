"""The pipeline registry (pipeline.py, registry.py): specs, rebuilding any registered kind, compositions of several
networks in one file, format-1 checkpoints, and the refusals that keep a config from choosing code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from denoising_diffusion.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.nn.unet import Unet
from denoising_diffusion.pipeline import build, load_pipeline, load_weights, save_pipeline, spec_of
from denoising_diffusion.registry import kind_named, model_kind, registered_kinds


def tiny() -> GaussianDiffusion:
    torch.manual_seed(0)
    unet = Unet(8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    return GaussianDiffusion(unet, image_size=8, timesteps=10, objective="pred_v")


@model_kind("test_pipeline.Scale")
class Scale(nn.Module):
    """A network a later issue might add: registered where it is defined, nothing else edited."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.config = {"channels": channels}
        self.channels, self.self_condition, self.learned_variance = channels, False, False
        self.weight = nn.Parameter(torch.randn(channels, 1, 1))

    def forward(self, x, t):
        return self.weight * x


@model_kind("test_pipeline.Cascade", parts=("stages", "refiner"))
class Cascade(nn.Module):
    """A composition: a list of diffusion stages plus one more model, each with its own networks."""

    def __init__(self, stages: list[GaussianDiffusion], refiner: nn.Module, label: str = "") -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.refiner = refiner
        self.config = {"label": label}


def test_the_spec_of_a_diffusion_nests_its_network() -> None:
    d = tiny()
    spec = spec_of(d)
    assert spec["kind"] == "GaussianDiffusion" and spec["objective"] == "pred_v" and spec["timesteps"] == 10
    assert spec["model"] == {"kind": "Unet", **d.model.config}
    rebuilt = build(spec)
    assert type(rebuilt) is GaussianDiffusion and type(rebuilt.model) is Unet
    assert spec_of(rebuilt) == spec


def test_a_new_kind_joins_without_editing_the_pipeline(tmp_path: Path) -> None:
    assert {"GaussianDiffusion", "Unet", "test_pipeline.Scale"} <= set(registered_kinds())
    d = GaussianDiffusion(Scale(channels=1), image_size=4, timesteps=5)
    path = save_pipeline(d, tmp_path / "scale.pt")
    loaded = load_pipeline(path)
    assert type(loaded.model) is Scale and torch.equal(loaded.model.weight, d.model.weight)
    assert not loaded.training


def test_a_composition_of_several_networks_is_one_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    stages = [tiny(), GaussianDiffusion(Scale(), image_size=8, timesteps=7)]
    cascade = Cascade(stages, Scale(channels=2), label="two stages")
    spec = spec_of(cascade)
    assert [s["kind"] for s in spec["stages"]] == ["GaussianDiffusion", "GaussianDiffusion"]
    assert spec["stages"][1]["model"]["kind"] == "test_pipeline.Scale" and spec["refiner"]["channels"] == 2
    path = save_pipeline(cascade, tmp_path / "cascade.pt")
    assert set(load_checkpoint(path)) == {"format_version", "package_version", "config", "weights"}
    loaded = load_pipeline(path)
    assert type(loaded) is Cascade and loaded.config == {"label": "two stages"}
    expected = cascade.state_dict()
    assert loaded.state_dict().keys() == expected.keys() and len(expected) > 10
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_an_unregistered_network_is_refused_by_name_before_anything_is_written(tmp_path: Path) -> None:
    class Mine(Scale):  # a subclass is not its parent's kind
        pass

    d = GaussianDiffusion(Mine(), image_size=4, timesteps=5)
    assert spec_of(d)["model"]["kind"] == "Mine"
    with pytest.raises(ValueError, match=r"cannot save model: 'Mine' as a pipeline: not a registered model kind"):
        save_pipeline(d, tmp_path / "mine.pt")
    assert not (tmp_path / "mine.pt").exists()
    good = save_pipeline(tiny(), tmp_path / "good.pt")
    checkpoint = load_checkpoint(good)
    checkpoint["config"]["model"]["kind"] = "Mine"
    save_checkpoint(good, checkpoint)
    with pytest.raises(CheckpointError, match=r"good.pt.*cannot rebuild model: 'Mine'.*registered: .*Unet"):
        load_pipeline(good)


def test_a_config_cannot_build_anything_but_declared_parts() -> None:
    """A spec-shaped dict in an ordinary config field stays data; only a kind's declared parts are built, and only
    registered kinds are."""
    spec = {
        "kind": "test_pipeline.Cascade",
        "label": {"kind": "Unet", "dim": 8},
        "stages": [],
        "refiner": {"kind": "test_pipeline.Scale", "channels": 1},
    }
    cascade = build(spec)
    assert cascade.config == {"label": {"kind": "Unet", "dim": 8}}
    with pytest.raises(ValueError, match=r"cannot rebuild stages\[0\]: 'os.system'"):
        build({**spec, "stages": [{"kind": "os.system"}]})
    with pytest.raises(ValueError, match="refiner: missing"):
        build({k: v for k, v in spec.items() if k != "refiner"})


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="'Unet' is already registered by denoising_diffusion.nn.unet.Unet"):
        model_kind("Unet")(Scale)
    assert kind_named("Unet").cls is Unet
    model_kind("test_pipeline.Scale")(Scale)  # the same class again (a module reload) is fine


def test_a_format_1_checkpoint_still_loads(tmp_path: Path) -> None:
    """Checkpoints written before the registry stored {"model_class", "model", "diffusion"}."""
    d = tiny()
    payload = {
        "format_version": 1,
        "package_version": "0.1.0",
        "step": 3,
        "model": d.model.state_dict(),
        "ema": None,
        "opt": None,
        "scaler": None,
        "config": {"model_class": "Unet", "model": d.model.config, "diffusion": d.config},
    }
    path = save_checkpoint(tmp_path / "model-1.pt", payload)
    loaded = load_pipeline(path)
    assert spec_of(loaded) == spec_of(d)
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, d.model.state_dict()[name]), name
    resumed = tiny()  # what a Trainer does on resume: the specs must agree, then the weights load
    with torch.no_grad():
        next(resumed.model.parameters()).add_(1.0)
    load_weights(resumed, load_checkpoint(path))
    assert torch.equal(next(resumed.model.parameters()), next(d.model.parameters()))
    payload["config"]["diffusion"]["timesteps"] = 20
    with pytest.raises(CheckpointError, match="timesteps: checkpoint has 20, this model has 10"):
        load_weights(resumed, load_checkpoint(save_checkpoint(path, payload)))


def _decorated(decorator: str) -> dict[str, str]:
    """{registered name: module} of every class in the package decorated with ``decorator`` (read from the source)."""
    import ast

    package = Path(__file__).resolve().parents[2] / "denoising_diffusion"
    found = {}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for dec in node.decorator_list:
                    call = dec if isinstance(dec, ast.Call) else None
                    name = getattr(call.func if call else dec, "id", None)
                    if name == decorator:
                        arg = call.args[0].value if call and call.args else node.name  # type: ignore[attr-defined]
                        found[arg] = str(path.relative_to(package))
    return found


def test_every_kind_and_process_is_found_without_a_list_of_modules() -> None:
    """Every @model_kind and @process_kind class of the package is registered after discovery, and the pipeline does
    not import the modules that define kinds (issue 29: kinds are found without hand-kept import lists)."""
    from denoising_diffusion.pipeline import discover_kinds
    from denoising_diffusion.processes import registered_processes
    from denoising_diffusion.registry import registered_kinds

    discover_kinds()
    kinds, processes = _decorated("model_kind"), _decorated("process_kind")
    assert {"GaussianDiffusion", "Unet", "EncoderClassifier", "NoiseAwareClassifier"} <= set(kinds)
    assert set(kinds) <= set(registered_kinds()), kinds
    assert {"ddpm", "vp", "subvp", "ve", "ncsn", "edm"} <= set(processes) <= set(registered_processes())
    import ast

    tree = ast.parse((Path(__file__).resolve().parents[2] / "denoising_diffusion" / "pipeline.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = node.module or ""
            imported |= {base} | {f"{base}.{alias.name}".lstrip(".") for alias in node.names}
    defining = {module.removesuffix(".py").replace("/", ".") for module in kinds.values()}
    assert not imported & defining, imported & defining
