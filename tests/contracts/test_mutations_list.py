"""The mutation list (tools/mutations.py) must not rot: every snippet still occurs exactly once in its file, and every
test it names still exists. Runs in well under a second; the mutation run itself is ``python tools/mutate.py``
(tests/README.md), never part of this suite."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("_mutations_under_test", ROOT / "tools" / "mutations.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


MUTATIONS = _load().MUTATIONS


def test_ids_are_unique_and_there_are_enough() -> None:
    ids = [m.id for m in MUTATIONS]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert len(ids) >= 30


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_snippet_occurs_exactly_once(mutation) -> None:
    assert mutation.file.startswith("denoising_diffusion/"), "mutations target the package's maths modules"
    text = (ROOT / mutation.file).read_text(encoding="utf-8")
    assert text.count(mutation.original) == 1, f"{mutation.id}: update its snippet in tools/mutations.py"
    assert mutation.replacement != mutation.original
    assert mutation.bug and mutation.tests


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test")}


def test_every_named_test_exists() -> None:
    missing = []
    for node in sorted({node for m in MUTATIONS for node in m.tests}):
        file, _, name = node.partition("::")
        path = ROOT / file
        if not path.is_file() or (name and name.split("[")[0] not in _test_functions(path)):
            missing.append(node)
    assert not missing, f"tools/mutations.py names tests that do not exist: {missing}"
