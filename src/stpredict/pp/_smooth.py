"""``st.pp.smooth``: denoise measured expression within each slide before it becomes a target."""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from tqdm.auto import tqdm

from .._constants import LIBRARY_KEY
from .._distributed import resolve_client
from .._docs import doc_params
from .._logging import logger
from .._validate import check_adata, get_matrix, require_grid, require_spatial, slide_masks
from ._denoise import adaptive_median, eags, neighbour_mean
from ._grid import infer_grid
from ._spcs import spcs

Method = Literal["8n", "spcs", "adaptive_median", "eags"]
_DEFAULTS: dict[str, dict] = {
    "8n": {},
    "spcs": {"tau_p": 16, "tau_s": 2, "alpha": 0.6, "beta": 0.4, "n_pcs": 10, "rescale_to_8n": False, "exact": None},
    "adaptive_median": {"n_rings": 7},
    "eags": {"n_neighbors": 10, "n_pcs": 50, "quantile": 90.0, "weight_at_quantile": 0.95, "exact": None},
}


def _rescale_into(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Min-max rescale ``values`` into the value range of ``reference`` (MERGE's ``counts_spcs_to_8n``)."""
    lo, hi = np.nanmin(values), np.nanmax(values)
    if hi == lo:
        return np.full_like(values, np.nanmin(reference))
    return (values - lo) / (hi - lo) * (np.nanmax(reference) - np.nanmin(reference)) + np.nanmin(reference)


def _with_absent_genes(values: np.ndarray, absent: np.ndarray, fill) -> np.ndarray:
    """Columns of the genes that were smoothed, back among the all-NaN genes (filled with ``fill``)."""
    if not absent.any():
        return values
    full = np.full((values.shape[0], absent.size), fill, dtype=values.dtype)
    full[:, ~absent] = values
    return full


def _min_spots(method: str, settings: dict) -> int:
    """Fewest spots per slide each method can smooth."""
    if method == "eags":
        return settings["n_neighbors"] + 1
    return {"8n": 1, "spcs": 3, "adaptive_median": 2}[method]


def _check_slides(
    adata: AnnData, method: str, settings: dict, masks: dict[str, np.ndarray], rows: np.ndarray, cols: np.ndarray
) -> None:
    if adata.n_vars == 0:
        msg = "adata has no genes: there is nothing to smooth."
        raise ValueError(msg)
    needed = _min_spots(method, settings)
    small = {lib: int(mask.sum()) for lib, mask in masks.items() if mask.sum() < needed}
    if small:
        msg = (
            f"smooth(method={method!r}) needs at least {needed} spots per slide; slide(s) {small} (spot counts) "
            "have fewer. Leave them out (adata[~adata.obs.library_id.isin([...])]) or use method='8n'."
        )
        raise ValueError(msg)
    for lib, mask in masks.items():
        key = (rows[mask] - rows[mask].min()) * (int(np.ptp(cols[mask])) + 1) + (cols[mask] - cols[mask].min())
        positions = pd.Index(key)
        if positions.has_duplicates:
            spots = adata.obs_names[mask][positions.duplicated(keep=False)][:4].tolist()
            msg = (
                f"Slide {lib!r} has several spots at the same array position (array_row, array_col), e.g. {spots}: "
                "smoothing on the spot array needs one spot per position. Check obs['library_id'] (two slides "
                "under one name?) and the array coordinates."
            )
            raise ValueError(msg)


def _smooth_slide(
    x: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    grid: str,
    spatial: np.ndarray | None,
    method: str,
    settings: dict,
    random_state: int | None,
) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """One slide's smoothed values, the adaptive median's mask of imputed entries, and the neighbour search used."""
    report: dict = {}
    imputed = None
    if method == "8n":
        smoothed = neighbour_mean(x, rows, cols, grid)
    elif method == "spcs":
        spcs_params = {k: v for k, v in settings.items() if k != "rescale_to_8n"}
        smoothed = spcs(x, rows, cols, grid, random_state=random_state, report=report, **spcs_params)
        if settings["rescale_to_8n"]:
            smoothed = _rescale_into(smoothed, neighbour_mean(x, rows, cols, grid))
    elif method == "adaptive_median":
        smoothed, imputed = adaptive_median(x, rows, cols, settings["n_rings"])
    else:
        smoothed = eags(x, spatial, random_state=random_state, report=report, **settings)
    return smoothed, imputed, report.get("neighbour_search")


@doc_params("copy", "library_key")
def smooth(
    adata: AnnData,
    *,
    method: Method = "spcs",
    layer: str | None = "log1p",
    key_added: str | None = None,
    library_key: str = LIBRARY_KEY,
    random_state: int | None = 0,
    client=None,
    show_progress_bar: bool = True,
    copy: bool = False,
    **params,
) -> AnnData | None:
    """Smooth expression within each slide (never across slides).

    Methods and their defaults (override them as keyword arguments):

    - ``'8n'`` (ST-Net, TRIPLEX): mean of the spot and its first ring of array neighbours. On the square
      legacy-ST grid that is the 3 x 3 window (8 neighbours); on Visium's hex grid the 6 hex neighbours.
    - ``'spcs'`` (Liu et al. 2022, used by MERGE): ``(1-α) x_i + α [β Σ spatial + (1-β) Σ pattern]`` with
      spatial neighbours within grid Manhattan distance ``tau_s=2`` (4 in Visium's doubled columns, weight
      1/d) and the ``tau_p=16`` spots of the slide with the most correlated 10-PC expression pattern (weight
      exp(-4.5 (1-r)²), only r ≥ 0); ``alpha=0.6``, ``beta=0.4``. ``rescale_to_8n=True`` min-max rescales
      the result into the range of the 8n-smoothed values (MERGE's training targets).
    - ``'adaptive_median'`` (SEPAL): replaces only zeros, by the first non-zero median over growing grid
      rings (``n_rings=7``); writes a boolean mask of imputed entries to ``layers[f'{key_added}_imputed']``
      so metrics can skip them (see ``mask_layer`` of :func:`stpredict.tl.evaluate`).
    - ``'eags'`` (STOmics EAGS): Gaussian-weighted mean over the ``n_neighbors=10`` most similar spots in
      ``n_pcs=50`` PCA space, weights from their spatial distance (90th percentile gets weight 0.95).

    SPCS's pattern neighbours and EAGS's expression neighbours are found exactly (the fastest of a k-d tree,
    BLAS brute force and a numba scan, timed on a sample), or, when that is projected to take over two
    minutes (a million spots without clustered expression), approximately with pynndescent;
    ``exact=True``/``False`` forces either. Values are smoothed in float32, slide by slide.

    The grid type comes from ``uns['spatial'][library_id]['metadata']['grid']`` (set by the readers) or is
    inferred from the array coordinates.

    Parameters
    ----------
    adata
        Slides with ``obs['array_row']``, ``obs['array_col']`` and ``obs['library_id']``.
    method
        ``'8n'``, ``'spcs'``, ``'adaptive_median'`` or ``'eags'``.
    layer
        Layer to smooth (``None`` for ``X``), normally log-normalised values.
    key_added
        Output layer; defaults to ``f'{layer}_{method}'``.
    {library_key}
    random_state
        Seed of the PCA steps (SPCS, EAGS).
    client
        A ``dask.distributed`` Client (``True``: the active one): slides are smoothed in parallel, one slide per
        task, with results equal to the serial ones.
    show_progress_bar
        Show a progress bar over slides.
    {copy}
    **params
        Method parameters (see above).

    Returns
    -------
    ``None`` or the modified copy; writes ``adata.layers[key_added]`` and parameters to
    ``adata.uns['stpredict_smooth'][key_added]`` (for SPCS and EAGS also ``'neighbour_search'``: the search
    each slide used, ``'kdtree'``, ``'brute'`` or ``'scan'`` (exact) or ``'pynndescent'`` (approximate)).
    ``X`` and other layers are never changed.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> st.pp.smooth(adata, method="8n", show_progress_bar=False)
    >>> adata.layers["log1p_8n"].shape == adata.shape
    True
    """
    check_adata(adata)
    if method not in _DEFAULTS:
        msg = f"Unknown smoothing method {method!r}; choose from {list(_DEFAULTS)}."
        raise ValueError(msg)
    unknown = set(params) - set(_DEFAULTS[method])
    if unknown:
        msg = f"Unknown parameter(s) {sorted(unknown)} for method {method!r}; accepted: {sorted(_DEFAULTS[method])}."
        raise TypeError(msg)
    settings = {**_DEFAULTS[method], **params}
    rows_all, cols_all = require_grid(adata)
    if method == "eags":
        require_spatial(adata)
    values = get_matrix(adata, layer, dtype=np.float32)
    # genes that are NaN everywhere (e.g. no gene length for TPM) stay NaN; other NaN cannot be smoothed
    missing = np.isnan(values)
    absent = missing.all(axis=0)
    if missing[:, ~absent].any():
        partial = adata.var_names[missing.any(axis=0) & ~absent][:5].tolist()
        msg = f"Layer {layer!r} contains NaN for some spots of gene(s) {partial}; smoothing needs complete values."
        raise ValueError(msg)
    del missing
    if np.isinf(values).any():
        genes = adata.var_names[np.isinf(values).any(axis=0)][:5].tolist()
        msg = f"Layer {layer!r} contains infinite values (gene(s) {genes}); smoothing needs finite values."
        raise ValueError(msg)
    if absent.any():
        logger.info("smooth: %d gene(s) are NaN in every spot and stay NaN", int(absent.sum()))
        values = values[:, ~absent]
    masks = slide_masks(adata, library_key)
    _check_slides(adata, method, settings, masks, rows_all, cols_all)
    adata = adata.copy() if copy else adata
    key_added = key_added or f"{layer or 'X'}_{method}"
    single = len(masks) == 1  # one slide: kernels read and return whole arrays, no per-slide copies
    grids = {lib: infer_grid(adata, lib, rows_all[mask], cols_all[mask]) for lib, mask in masks.items()}
    spatial_all = np.asarray(adata.obsm["spatial"], dtype=float) if method == "eags" else None

    def slide_inputs(library_id: str, mask: np.ndarray) -> tuple:
        x = values if single else values[mask]
        spatial = spatial_all[mask] if spatial_all is not None else None
        return x, rows_all[mask], cols_all[mask], grids[library_id], spatial

    started = time.perf_counter()
    client = resolve_client(client)
    if client is not None:  # one task per slide; the slide's values travel, the kernels run on the workers
        futures = [
            client.submit(_smooth_slide, *slide_inputs(lib, mask), method, settings, random_state, pure=False)
            for lib, mask in masks.items()
        ]
        results = dict(zip(masks, client.gather(futures), strict=True))
    else:
        results = {}
        for library_id, mask in tqdm(masks.items(), desc=f"smooth ({method})", disable=not show_progress_bar):
            results[library_id] = _smooth_slide(*slide_inputs(library_id, mask), method, settings, random_state)
    searches = {library_id: search for library_id, (_, _, search) in results.items() if search is not None}
    if single:
        out, imputed, _ = next(iter(results.values()))
    else:
        out = np.empty_like(values)
        imputed = np.zeros(values.shape, dtype=bool) if method == "adaptive_median" else None
        for library_id, (smoothed, slide_imputed, _) in results.items():
            out[masks[library_id]] = smoothed
            if slide_imputed is not None:
                imputed[masks[library_id]] = slide_imputed
    del results
    adata.layers[key_added] = _with_absent_genes(out, absent, np.nan).astype(np.float32, copy=False)
    if imputed is not None:
        adata.layers[f"{key_added}_imputed"] = _with_absent_genes(imputed, absent, False)
    adata.uns.setdefault("stpredict_smooth", {})[key_added] = {
        "method": method,
        "layer": layer,
        "params": settings,
        "grid": grids,
        "random_state": random_state,
    }
    if searches:  # which neighbour search each slide used: 'kdtree', 'brute', 'scan' (exact) or 'pynndescent'
        adata.uns["stpredict_smooth"][key_added]["neighbour_search"] = searches
    logger.info(
        "smooth: added layer %r (%s, %d slide(s), %.1f s)", key_added, method, len(masks), time.perf_counter() - started
    )
    return adata if copy else None
