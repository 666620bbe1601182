"""Stable Diffusion's VAE as an option (nn/diffusers_autoencoder.py), on a tiny randomly initialised diffusers
AutoencoderKL saved to a temporary folder: the same posterior and decoder as diffusers', its own scaling factor, a
latent model around it rebuilt from one file with the folder gone, and clear errors for what is not one."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from latent_helpers import SIZE, save_tiny_vae, tiny_latent_diffusion

from denoising_diffusion import load_pipeline, save_pipeline
from denoising_diffusion.nn.diffusers_autoencoder import DiffusersAutoencoder


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory) -> Path:
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "vae")


def test_the_adapter_is_the_vae_with_images_in_zero_one(vae_folder: Path) -> None:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_folder).eval()
    adapter = DiffusersAutoencoder.from_pretrained(vae_folder).eval()
    assert (adapter.channels, adapter.latent_channels, adapter.factor) == (3, 4, 2)
    assert adapter.scaling_factor == 0.5 and adapter.shift_factor == 0.0
    images = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = vae.encode(images * 2 - 1).latent_dist
        posterior = adapter.encode(images)
        torch.testing.assert_close(posterior.mean, expected.mean)
        torch.testing.assert_close(posterior.logvar, expected.logvar)
        z = torch.randn(2, 4, SIZE // 2, SIZE // 2)
        torch.testing.assert_close(adapter.decode(z), (vae.decode(z).sample + 1) / 2)


def test_a_latent_model_takes_the_vae_scaling_factor_and_rebuilds_without_the_folder(vae_folder, tmp_path) -> None:
    shutil.copytree(vae_folder.parent, tmp_path / "pipeline")  # a Stable Diffusion folder: the VAE under vae/
    latent = tiny_latent_diffusion(DiffusersAutoencoder.from_pretrained(tmp_path / "pipeline"), scale_factor=None)
    assert latent.scale_factor == 0.5 and not latent.needs_data_statistics
    assert latent.pixel_shape == (3, SIZE, SIZE) and latent.latent_shape == (4, SIZE // 2, SIZE // 2)
    save_pipeline(latent.eval(), tmp_path / "latent.pt")
    shutil.rmtree(tmp_path / "pipeline")
    rebuilt = load_pipeline(tmp_path / "latent.pt")
    assert isinstance(rebuilt.autoencoder, DiffusersAutoencoder)
    a = latent.sample(2, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0))
    b = rebuilt.sample(2, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_folder_that_is_not_an_autoencoder_kl_is_refused(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ValueError, match="describes a UNet2DConditionModel, not an AutoencoderKL"):
        DiffusersAutoencoder.from_pretrained(tmp_path / "unet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        DiffusersAutoencoder.from_pretrained(tmp_path / "empty")
    with pytest.raises(ValueError, match="is not a directory"):
        DiffusersAutoencoder.from_pretrained(tmp_path / "missing")


def test_without_diffusers_the_error_names_what_to_install(vae_folder: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now raises ImportError
    with pytest.raises(ImportError, match=r"denoising-diffusion\[latent\]"):
        DiffusersAutoencoder.from_pretrained(vae_folder)
