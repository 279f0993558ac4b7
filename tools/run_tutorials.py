"""Execute the tutorials top to bottom and store their outputs in the notebooks (what the docs render).

    python tools/run_tutorials.py                  # all of tutorials/*.ipynb
    python tools/run_tutorials.py 03_new_slide     # one

Each notebook runs in a scratch directory, so the files it writes (saved models, checkpoints) stay out of
the repository. The tests (tests/test_tutorials.py) execute the same notebooks without saving them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"


def execute(path: Path, workdir: Path, timeout: int = 1200) -> nbformat.NotebookNode:
    """The notebook at ``path`` executed in ``workdir`` (raises on the first failing cell)."""
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    return notebook


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all)")
    args = parser.parse_args(argv)
    paths = [TUTORIALS / f"{n.removesuffix('.ipynb')}.ipynb" for n in args.names] or sorted(TUTORIALS.glob("*.ipynb"))
    for path in paths:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as workdir:
            notebook = execute(path, Path(workdir))
        nbformat.write(notebook, path)
        print(f"{path.name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
