"""The README says which line of the tutorial it changes (the import) and why, and the reason holds: the tutorial's
own import names lucidrains' package, whose GaussianDiffusion no longer runs the tutorial's call."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
TUTORIAL_IMPORT = "from denoising_diffusion_pytorch import Unet, GaussianDiffusion, Trainer"
OUR_IMPORT = "from denoising_diffusion import Unet, GaussianDiffusion, Trainer"


def as_written_section() -> str:
    text = README.read_text()
    start = text.index("## The tutorial, as written")
    return text[start : text.index("\n## ", start + 1)]


def test_the_readme_names_the_changed_import_line_and_why() -> None:
    section = as_written_section()
    prose = re.sub(r"```.*?```", "", section, flags=re.S)
    assert "with one line changed: the\nimport" in prose
    assert f"`{TUTORIAL_IMPORT}`" in prose and f"`{OUR_IMPORT}`" in prose
    assert "no longer takes `loss_type`" in prose and "Every line after the import runs unchanged" in prose
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks and all(OUR_IMPORT in block and "denoising_diffusion_pytorch" not in block for block in blocks)


def test_the_tutorials_own_import_is_another_package_that_no_longer_takes_loss_type() -> None:
    theirs = pytest.importorskip("denoising_diffusion_pytorch")  # in the test extra (the peer benchmarks)
    import denoising_diffusion

    assert theirs.GaussianDiffusion is not denoising_diffusion.GaussianDiffusion
    with pytest.raises(TypeError, match="loss_type"):
        theirs.GaussianDiffusion(theirs.Unet(dim=8, dim_mults=(1, 2)), image_size=8, timesteps=10, loss_type="l1")
