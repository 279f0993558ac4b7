"""The documentation builds with warnings as errors (offline: no intersphinx inventories)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_docs_build_without_warnings(tmp_path):
    env = {**os.environ, "STPREDICT_DOCS_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-q",
        "-b",
        "html",
        "-d",
        str(tmp_path / "doctrees"),
    ]
    result = subprocess.run(
        [*command, str(ROOT / "docs"), str(tmp_path / "html")], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    html = tmp_path / "html"
    for page in ("index", "installation", "api", "anndata", "benchmarks", "changelog", "notebooks/02_compare_models"):
        assert (html / f"{page}.html").exists(), page
    assert "model_ablations" in (html / "notebooks" / "02_compare_models.html").read_text()
    assert (html / "generated" / "stpredict.tl.fit.html").exists()


def test_benchmark_tables_are_generated_from_the_results():
    """``docs/benchmarks.md``'s generated tables are what ``benchmarks/report.py`` writes from the results."""
    script = ROOT / "benchmarks" / "report.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
