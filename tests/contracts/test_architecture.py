"""The layers of docs/architecture.md, checked on the source: who may import whom, and no import cycles (type-only
imports included, since they are read from the syntax tree, not from what runs)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "denoising_diffusion"
ROOT = "denoising_diffusion"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


GRAPH_NODES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """Every package module ``path`` imports (``from . import x`` counts as importing the module x)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(ROOT))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith(ROOT):
                continue
            for alias in node.names:  # a submodule, or a name defined in the module ``base``
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in GRAPH_NODES else base)
    return {m for m in found if m in GRAPH_NODES} - {name}


IMPORTS = {module_name(p): imported_modules(p) for p in PACKAGE.rglob("*.py")}


def importers_of(prefix: str) -> set[str]:
    return {m for m, deps in IMPORTS.items() if any(d == prefix or d.startswith(prefix + ".") for d in deps)}


def test_the_graph_is_read() -> None:
    assert "denoising_diffusion.training.trainer" in IMPORTS and "denoising_diffusion.pipeline" in IMPORTS
    assert "denoising_diffusion.checkpoint" in IMPORTS["denoising_diffusion.pipeline"]


def test_no_import_cycles() -> None:
    """Depth-first search; a cycle is reported as the chain of modules that closes it."""
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(module: str, chain: list[str]) -> None:
        state[module] = 1
        for dep in sorted(IMPORTS[module] - {ROOT}):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(chain[chain.index(dep) :] + [module, dep]))
            if dep not in state:
                visit(dep, chain + [module])
        state[module] = 2

    for module in sorted(IMPORTS):
        if module not in state:
            visit(module, [])


def test_nothing_imports_names_from_the_package_root() -> None:
    assert [m for m in IMPORTS if ROOT in IMPORTS[m]] == []


@pytest.mark.parametrize(
    "layer,allowed",
    [
        ("training", {"denoising_diffusion", "denoising_diffusion.cli"}),
        ("cli", {"denoising_diffusion.__main__"}),
    ],
)
def test_only_the_layers_above_import_training_and_cli(layer: str, allowed: set[str]) -> None:
    inside = f"{ROOT}.{layer}"
    outside = {m for m in importers_of(inside) if not (m == inside or m.startswith(inside + "."))}
    assert {m for m in outside if not any(m == a or m.startswith(a + ".") for a in allowed)} == set()


def test_checkpoint_is_the_file_format_only() -> None:
    assert IMPORTS[f"{ROOT}.checkpoint"] <= {f"{ROOT}._version"}


@pytest.mark.parametrize(
    "layer,forbidden",
    [
        (
            "nn",
            ["processes", "diffusion", "samplers", "pipeline", "pretrained", "likelihood", "losses", "training", "cli"],
        ),
        ("samplers", ["nn", "diffusion", "pipeline", "training", "cli"]),
        ("diffusion", ["pipeline", "pretrained", "training", "cli", "nn"]),
        ("processes", ["diffusion", "samplers", "nn", "pipeline", "preconditioning", "losses", "sampling"]),
        ("registry", ["nn", "diffusion", "pipeline", "pretrained", "checkpoint"]),  # the mixin: through a table
        ("editing", ["diffusion", "nn", "pipeline", "training", "cli"]),  # diffusion.py's thin methods import it
        ("pipeline", ["cascade", "latent", "reflow", "training", "cli"]),  # compositions register themselves
        ("cascade", ["nn", "training", "cli"]),
        ("latent", ["pipeline", "pretrained", "training", "cli"]),
        ("reflow", ["pipeline", "pretrained", "training", "cli"]),
    ],
)
def test_lower_layers_do_not_import_upper_ones(layer: str, forbidden: list[str]) -> None:
    modules = [m for m in IMPORTS if m == f"{ROOT}.{layer}" or m.startswith(f"{ROOT}.{layer}.")]
    assert modules
    bad = {
        (m, d)
        for m in modules
        for d in IMPORTS[m]
        if any(d == f"{ROOT}.{f}" or d.startswith(f"{ROOT}.{f}.") for f in forbidden)
    }
    assert bad == set()
