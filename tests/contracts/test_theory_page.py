"""docs/theory.md runs: its Python blocks execute in order in one namespace (each checks a function against the
equation beside it), every function and file it names exists, every section has both, and its links resolve."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "theory.md"
PENDING = {"cascade.md", "latent.md", "flow.md"}
"""Pages being written beside this one (cascades, latent models, flow matching): linked before they land."""
MODULES = ("processes", "losses", "samplers", "likelihood", "guidance", "parameterization", "variance", "sampling",
           "preconditioning", "conditioning", "pipeline", "pretrained")  # fmt: skip


def sections() -> list[str]:
    return re.split(r"\n(?=## )", PAGE.read_text())[1:]


def test_the_page_runs() -> None:
    namespace: dict = {}
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) == 13  # the imports, then one per section
    for i, block in enumerate(blocks):
        exec(compile(block, f"{PAGE}:block{i}", "exec"), namespace)  # noqa: S102 - the page's own code


@pytest.mark.parametrize("section", sections(), ids=lambda s: s.splitlines()[0][3:40])
def test_each_section_names_its_code_and_checks_it(section: str) -> None:
    assert "In the code:" in section and "](../denoising_diffusion/" in section and "```python" in section


def test_every_named_function_and_file_exists() -> None:
    text = PAGE.read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if target.startswith("http"):
            continue
        path = (PAGE.parent / target).resolve()
        assert path.exists() or path.name in PENDING, f"theory.md links {target}, which does not exist"
    dotted = re.findall(r"`([a-z_]+(?:\.[A-Za-z_]+)+)`", text)
    names = {n for n in dotted if n.split(".")[0] in MODULES and n.rsplit(".", 1)[1] not in ("py", "md")}
    assert len(names) > 20
    for name in sorted(names):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                obj = importlib.import_module("denoising_diffusion." + ".".join(parts[:cut]))
            except ImportError:
                continue
            for attribute in parts[cut:]:
                assert hasattr(obj, attribute), f"theory.md names {name}, but {attribute!r} is not there"
                obj = getattr(obj, attribute)
            break
        else:
            pytest.fail(f"theory.md names {name}, which is not a module of the package")


def test_the_order_is_the_tutorials() -> None:
    titles = [s.splitlines()[0] for s in sections()]
    expected = ["forward process", "schedules", "posterior", "ELBO", "L_simple", "Learned variances", "Guidance",
                "Cascades", "Latent diffusion", "Score matching", "Langevin", "SDEs"]  # fmt: skip
    assert len(titles) == len(expected) and all(word.lower() in t.lower() for word, t in zip(expected, titles))
