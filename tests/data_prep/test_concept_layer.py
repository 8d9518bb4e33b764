"""The concept layer is source-neutral (issue 12): it reads concept names only.

SOFA, suspected infection, observations and the Sepsis-3 labels never import the MIMIC-III
item view (`data_prep.concepts.variables`) and hold no item-ID literal; the concepts below
`sepsis3` take their own parameter dataclasses and never import `sepsis3` (no import
circle behind TYPE_CHECKING)."""

from __future__ import annotations

import ast
import io as _io
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONCEPT_LAYER = [
    "data_prep/concepts/sofa.py",
    "data_prep/concepts/sofa_grid.py",
    "data_prep/concepts/sofa_components.py",
    "data_prep/concepts/sofa_evidence.py",
    "data_prep/concepts/infection.py",
    "data_prep/observations.py",
    "data_prep/sepsis3.py",
    "data_prep/sepsis3_params.py",
    "data_prep/sepsis3_onset.py",
]
BELOW_SEPSIS3 = [m for m in CONCEPT_LAYER if not m.startswith("data_prep/sepsis3")]


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement (`from a import b` gives a and a.b)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


@pytest.mark.parametrize("module", CONCEPT_LAYER)
def test_concept_layer_never_imports_the_item_view(module):
    assert "data_prep.concepts.variables" not in _imports(ROOT / module)


@pytest.mark.parametrize("module", BELOW_SEPSIS3)
def test_concepts_below_sepsis3_do_not_import_it(module):
    assert not {m for m in _imports(ROOT / module) if m.startswith("data_prep.sepsis3")}


@pytest.mark.parametrize("module", CONCEPT_LAYER)
def test_concept_layer_holds_no_item_id(module):
    """No 5- or 6-digit integer literal (MIMIC-III item IDs are 1..6 digits, the concept
    items of this pipeline mostly 5-6; shorter CareVue ones would be caught by review) and
    no `itemid` name in the code (docstrings and comments aside)."""
    src = (ROOT / module).read_text()
    bad = []
    for tok in tokenize.generate_tokens(_io.StringIO(src).readline):
        if tok.type == tokenize.NUMBER:
            digits = tok.string.replace("_", "")
            if digits.isdigit() and 5 <= len(digits) <= 6:
                bad.append((tok.start[0], tok.string))
        elif tok.type == tokenize.NAME and tok.string.lower() in ("itemid", "itemids"):
            bad.append((tok.start[0], tok.string))
    assert not bad, f"{module}: item IDs in the code at (line, token) {bad}"


def test_importing_the_concept_layer_does_not_load_the_item_view():
    code = (
        "import sys; import data_prep.sepsis3, data_prep.observations; "
        "print('data_prep.concepts.variables' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", out.stderr
