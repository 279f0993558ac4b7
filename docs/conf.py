"""Sphinx configuration for stpredict (API pages generated from the numpy-style docstrings)."""

import os
from importlib.metadata import version as _version

project = "stpredict"
author = "stpredict developers"
copyright = "2026, stpredict developers"
release = _version("stpredict")

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_copybutton",
]
# Links into the scverse/numpy docs need their inventories from the internet; the offline CI build
# (tests/test_docs.py) sets STPREDICT_DOCS_OFFLINE=1 so that warnings can stay errors there.
if not os.environ.get("STPREDICT_DOCS_OFFLINE"):
    extensions.append("sphinx.ext.intersphinx")
autosummary_generate = True
autodoc_member_order = "groupwise"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
default_role = "literal"
nb_execution_mode = "off"  # tutorials are committed with their outputs
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
    "squidpy": ("https://squidpy.readthedocs.io/en/stable/", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "pandas": ("https://pandas.pydata.org/docs/", None),
}
html_theme = "sphinx_book_theme"
html_title = "stpredict"
