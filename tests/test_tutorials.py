"""The tutorials run top to bottom on the bundled data, offline (as the docs show them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "tutorials").glob("*.ipynb"))


def _runner():
    spec = importlib.util.spec_from_file_location("run_tutorials", ROOT / "tools" / "run_tutorials.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_five_tutorials():
    assert [p.name for p in TUTORIALS] == [
        "01_quickstart.ipynb", "02_compare_models.ipynb", "03_new_slide.ipynb", "04_visium_hd.ipynb",
        "05_super_resolution.ipynb",
    ]  # fmt: skip


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_executes(path, tmp_path):
    notebook = _runner().execute(path, tmp_path)
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "a tutorial that draws no figure"
