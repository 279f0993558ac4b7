"""Parameter descriptions shared by many functions, written once (numpydoc), as scanpy's ``_doc_params``.

A docstring holds a line ``{name}`` at a parameter's indentation; :func:`doc_params` replaces it with the
shared block, indented to match. Only the names given are replaced, so other braces (dict literals in
examples) are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

SHARED = {
    "library_key": "library_key\n    ``obs`` column naming the slide of each spot; nothing is computed across two slides.",
    "copy": "copy\n    Return a modified copy instead of writing into ``adata`` (whose content is then left untouched).",
    "model_params": (
        "model_params\n    The model's parameters (``st.tl.get_model(model).defaults`` lists them with their defaults); a key\n"
        "    the model does not take is an error naming the accepted ones."
    ),
    "random_state": "random_state\n    Seed of every random choice (same seed and data: the same result on CPU).",
}


def doc_params(*names: str) -> Callable[[F], F]:
    """Replace the lines ``{name}`` of a docstring with the shared descriptions of ``names``.

    Examples
    --------
    >>> @doc_params("copy")
    ... def f(adata, copy=False):
    ...     '''Do something.
    ...
    ...     Parameters
    ...     ----------
    ...     {copy}
    ...     '''
    >>> print(f.__doc__.splitlines()[4].strip())
    copy
    """

    def decorate(function: F) -> F:
        lines = []
        for line in (function.__doc__ or "").splitlines():
            stripped = line.strip()
            name = stripped[1:-1] if stripped.startswith("{") and stripped.endswith("}") else None
            if name in names:
                indent = line[: len(line) - len(line.lstrip())]
                lines += [indent + block for block in SHARED[name].splitlines()]
            else:
                lines.append(line)
        function.__doc__ = "\n".join(lines)
        return function

    return decorate
