"""Slow or noisy optional imports, done once and quietly."""

from __future__ import annotations

import warnings


def import_squidpy():
    """``squidpy``, imported without the ``SyntaxWarning`` s its docstring tooling (docrep) emits on import."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not a valid key.*", category=SyntaxWarning)
        import squidpy

    return squidpy
