"""Input checks shared by every public function.

Each check raises an error that says what is wrong, where (which key, which slide), and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._constants import ARRAY_COL, ARRAY_ROW, LIBRARY_KEY, SPATIAL_KEY


def check_adata(adata: object, name: str = "adata") -> AnnData:
    """Fail early when something other than an AnnData is passed."""
    if not isinstance(adata, AnnData):
        msg = f"`{name}` must be an AnnData, got {type(adata).__name__}."
        raise TypeError(msg)
    return adata


def spot_libraries(adata: AnnData, library_key: str = LIBRARY_KEY) -> np.ndarray:
    """The slide of every spot as strings, from ``obs[library_key]``.

    As in squidpy, a single-slide AnnData without that column (e.g. from ``sc.read_visium``) belongs to
    the one library of ``uns['spatial']``.
    """
    if library_key in adata.obs:
        column = adata.obs[library_key]
        if column.isna().any():
            msg = (
                f"adata.obs[{library_key!r}] has {int(column.isna().sum())} missing value(s); every spot must "
                "name its slide."
            )
            raise ValueError(msg)
        return column.astype(str).to_numpy()
    libraries = list(adata.uns.get(SPATIAL_KEY, {}))
    if len(libraries) == 1:
        return np.full(adata.n_obs, str(libraries[0]), dtype=object)
    found = (
        f"uns[{SPATIAL_KEY!r}] holds {len(libraries)} libraries {libraries[:5]}" if libraries else "no uns['spatial']"
    )
    msg = (
        f"adata.obs has no column {library_key!r} telling which slide each spot belongs to ({found}). "
        f"Read slides with `st.io.read_st`/`st.io.read_visium`, or set adata.obs[{library_key!r}] yourself."
    )
    raise KeyError(msg)


def library_ids(adata: AnnData, library_key: str = LIBRARY_KEY) -> list[str]:
    """Slides of ``adata`` in order of first appearance (see :func:`spot_libraries`)."""
    return list(pd.unique(spot_libraries(adata, library_key)))


def slide_masks(adata: AnnData, library_key: str = LIBRARY_KEY) -> dict[str, np.ndarray]:
    """Boolean mask of the spots of each slide."""
    values = spot_libraries(adata, library_key)
    return {lib: values == lib for lib in pd.unique(values)}


def get_matrix(
    adata: AnnData, layer: str | None, *, columns: np.ndarray | None = None, dense: bool = True, dtype=np.float64
) -> np.ndarray:
    """``adata.layers[layer]`` (or ``X`` when ``layer`` is None), checked and as a dense array.

    ``columns`` (integer positions of genes) are selected before densifying, so a sparse layer of tens of
    thousands of genes never becomes a dense matrix when only a few genes are needed.
    """
    if layer is None:
        matrix = adata.X
        where = "adata.X"
    else:
        if layer not in adata.layers:
            available = ", ".join(map(repr, adata.layers.keys())) or "none"
            msg = (
                f"Layer {layer!r} not found in adata.layers (available: {available}). "
                "Create it first, e.g. `st.pp.normalize(adata)` writes 'log1p'."
            )
            raise KeyError(msg)
        matrix = adata.layers[layer]
        where = f"adata.layers[{layer!r}]"
    if matrix is None:
        msg = f"{where} is empty: this AnnData holds no expression values."
        raise ValueError(msg)
    if columns is not None:
        matrix = matrix[:, np.asarray(columns)]
    if dense:
        matrix = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
        matrix = matrix.astype(dtype, copy=False)
    return matrix


def get_rep(adata: AnnData, use_rep: str) -> np.ndarray:
    """``adata.obsm[use_rep]`` as a 2-D float array, with a helpful error when missing."""
    if use_rep not in adata.obsm:
        available = ", ".join(map(repr, adata.obsm.keys())) or "none"
        msg = (
            f"Representation {use_rep!r} not found in adata.obsm (available: {available}). "
            "Compute it with `st.pp.image_features(adata, method=...)`."
        )
        raise KeyError(msg)
    rep = adata.obsm[use_rep]
    rep = rep.to_numpy() if isinstance(rep, pd.DataFrame) else np.asarray(rep)
    rep = rep.reshape(len(rep), -1).astype(np.float64, copy=False)
    if not np.isfinite(rep).all():
        msg = f"adata.obsm[{use_rep!r}] contains NaN or infinite values; recompute or impute them first."
        raise ValueError(msg)
    return rep


def require_spatial(adata: AnnData, spatial_key: str = SPATIAL_KEY) -> np.ndarray:
    """Spot centres (x, y) in full-resolution pixels."""
    if spatial_key not in adata.obsm:
        msg = (
            f"adata.obsm[{spatial_key!r}] with the spot centres (x, y) in full-resolution pixels is missing. "
            "Read slides with `st.io.read_st`/`st.io.read_visium` or set it yourself."
        )
        raise KeyError(msg)
    coords = np.asarray(adata.obsm[spatial_key], dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] < 2:
        msg = f"adata.obsm[{spatial_key!r}] must be spots x 2 (x, y), got shape {coords.shape}."
        raise ValueError(msg)
    if not np.isfinite(coords).all():
        bad = adata.obs_names[~np.isfinite(coords).all(axis=1)][:5].tolist()
        msg = (
            f"adata.obsm[{spatial_key!r}] has missing or infinite coordinates for spot(s) {bad}; drop or fix "
            "those spots."
        )
        raise ValueError(msg)
    return coords[:, :2]


def require_grid(adata: AnnData, needed_by: str = "smoothing on the spot array") -> tuple[np.ndarray, np.ndarray]:
    """Integer array coordinates (row, col) of every spot; ``needed_by`` says what needs them in the error."""
    missing = [c for c in (ARRAY_ROW, ARRAY_COL) if c not in adata.obs]
    if missing:
        msg = (
            f"adata.obs lacks the grid coordinate column(s) {missing}: {needed_by} needs "
            f"integer {ARRAY_ROW!r} and {ARRAY_COL!r} (as written by `st.io.read_st`/`st.io.read_visium`)."
        )
        raise KeyError(msg)
    rows = adata.obs[ARRAY_ROW].to_numpy()
    cols = adata.obs[ARRAY_COL].to_numpy()
    if not (np.all(np.isfinite(rows.astype(float))) and np.all(np.isfinite(cols.astype(float)))):
        msg = f"adata.obs[{ARRAY_ROW!r}] / [{ARRAY_COL!r}] contain missing values."
        raise ValueError(msg)
    return rows.astype(np.int64), cols.astype(np.int64)


def check_unique(names: Sequence[str] | pd.Index, what: str, where: str) -> None:
    """Refuse duplicated spot or gene names, naming a few of them."""
    index = pd.Index(names)
    if not index.is_unique:
        dupes = index[index.duplicated()].unique()[:5].tolist()
        msg = f"Duplicate {what} in {where}: {dupes} (showing up to 5). Names must be unique; rename or aggregate them."
        raise ValueError(msg)


def as_gene_list(genes: Sequence[str] | str | None) -> list[str] | None:
    """Normalise a gene argument (a single name is accepted)."""
    if genes is None:
        return None
    if isinstance(genes, str):
        return [genes]
    return [str(g) for g in genes]


def check_genes_present(adata: AnnData, genes: Sequence[str], where: str = "adata") -> None:
    """Refuse genes that are not in ``adata.var_names``."""
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        msg = f"{len(missing)} gene(s) not found in {where}.var_names, e.g. {missing[:5]}."
        raise KeyError(msg)
    if not adata.var_names.is_unique:
        repeated = sorted(set(adata.var_names[adata.var_names.duplicated()]) & set(genes))
        if repeated:
            msg = (
                f"{len(repeated)} gene(s) appear more than once in {where}.var_names, e.g. {repeated[:5]}: which "
                f"column to read is ambiguous. Make the names unique first ({where}.var_names_make_unique(), as "
                "scanpy's readers do), or drop the duplicates."
            )
            raise ValueError(msg)


def spatial_entry(adata: AnnData, library_id: str) -> dict | None:
    """``adata.uns['spatial'][library_id]``, also when its keys are not strings (e.g. integer slide ids).

    Slide ids are compared as strings everywhere else (``obs[library_key]`` is read as text), so a slide
    ``2`` stored under the integer key ``2`` must be found when asked for ``'2'``.
    """
    spatial = adata.uns.get(SPATIAL_KEY, {})
    if library_id in spatial:
        return spatial[library_id]
    for key, value in spatial.items():
        if str(key) == str(library_id):
            return value
    return None


def did_you_mean(value: object, choices: Sequence[str], *, extensions_first: bool = False) -> str:
    """``" Did you mean 'x'?"`` for the closest of ``choices`` (``""`` when none is close).

    ``extensions_first``: a choice that extends ``value`` wins (``'uni2'`` -> ``'uni2-h'``, not ``'uni'``).
    """
    import difflib

    extended = [c for c in choices if c.startswith(str(value))] if extensions_first else []
    close = extended or difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_choice(value: object, choices: Sequence[str], name: str) -> str:
    """Refuse a value outside ``choices``, naming the parameter, the bad value and the closest choice."""
    if isinstance(value, str) and value in choices:
        return value
    hint = did_you_mean(value, choices)
    msg = f"Unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}.{hint}"
    raise ValueError(msg)
