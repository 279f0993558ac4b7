"""Property-based tests: random small slides (shapes, NaN patterns, coordinates) through the readers and the
preprocessing functions. Every call either works or raises one of the package's own errors (raised in
stpredict's code, with a message), and never changes its input."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import stpredict as st

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as strats  # noqa: E402

PACKAGE_DIR = str(Path(st.__file__).resolve().parent)
OWN_ERRORS = (ValueError, KeyError, TypeError, MemoryError, FileNotFoundError)
# no "explain" phase: its line tracer breaks numba-compiled code (SystemError); derandomized so CI is repeatable
EXAMPLES = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)


def raised_by_the_package(error: BaseException) -> bool:
    """Whether the innermost frame of ``error`` is stpredict's own code (a deliberate check, not a crash deep down)."""
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(PACKAGE_DIR)


def snapshot(adata: ad.AnnData) -> tuple:
    x = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X)
    layers = tuple((k, np.asarray(v).tobytes()) for k, v in adata.layers.items())
    obsm = tuple((k, np.asarray(v).tobytes()) for k, v in adata.obsm.items())
    return adata.shape, x.tobytes(), layers, obsm, tuple(adata.obs.columns), tuple(adata.uns.keys())


@strats.composite
def small_slides(draw):
    """AnnData of 0-14 spots x 0-8 genes on 1-3 slides, counts possibly with NaN/inf/negatives/fractions."""
    n_obs = draw(strats.integers(0, 14))
    n_vars = draw(strats.integers(0, 8))
    rng = np.random.default_rng(draw(strats.integers(0, 2**32 - 1)))
    counts = rng.poisson(draw(strats.sampled_from([0.0, 0.5, 5.0])), size=(n_obs, n_vars)).astype(float)
    corruption = draw(strats.sampled_from(["none", "nan", "inf", "negative", "fraction", "nan_gene"]))
    if counts.size:
        if corruption == "nan":
            counts[rng.random(counts.shape) < 0.2] = np.nan
        elif corruption == "inf":
            counts.flat[rng.integers(counts.size)] = np.inf
        elif corruption == "negative":
            counts.flat[rng.integers(counts.size)] = -1
        elif corruption == "fraction":
            counts = np.log1p(counts)
        elif corruption == "nan_gene":
            counts[:, 0] = np.nan
    n_slides = draw(strats.integers(1, 3))
    rows = rng.integers(0, 5, n_obs)
    cols = rng.integers(0, 5, n_obs)
    coords = np.column_stack([cols, rows]).astype(float) * 100 + 50
    if draw(strats.booleans()) and n_obs:
        coords[rng.integers(n_obs)] = draw(strats.sampled_from([np.nan, -1e6, 1e12]))
    obs = pd.DataFrame(
        {
            "library_id": pd.Categorical([f"s{i % n_slides}" for i in range(n_obs)]),
            "patient": pd.Categorical([f"p{i % 2}" for i in range(n_obs)]),
            "array_row": rows,
            "array_col": cols,
        },
        index=[f"spot{i}" for i in range(n_obs)],
    )
    adata = ad.AnnData(counts, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_vars)]))
    adata.layers["counts"] = counts.copy()
    adata.obsm["spatial"] = coords
    return adata


def call_checked(adata: ad.AnnData, fn, *args, **kwargs):
    """Run ``fn``; only the package's own errors may escape; the input must not change."""
    before = snapshot(adata)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(*args, **kwargs)
    except OWN_ERRORS as error:
        assert raised_by_the_package(error), f"{type(error).__name__} from outside stpredict: {error}"
        assert str(error), "an error must say what is wrong"
    assert snapshot(adata) == before, f"{fn.__name__} changed its input"


@EXAMPLES
@given(small_slides())
def test_preprocessing_never_crashes_or_mutates(adata):
    call_checked(adata, st.pp.normalize, adata, copy=True)
    call_checked(adata, st.pp.normalize, adata, layer=None, method="tpm", lengths=pd.Series(1000.0, adata.var_names),
                 copy=True)  # fmt: skip
    call_checked(adata, st.pp.select_genes, adata, n_genes=3, copy=True)
    normalised = adata.copy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            st.pp.normalize(normalised)
    except OWN_ERRORS:
        return
    for method in ("8n", "spcs", "adaptive_median"):
        call_checked(normalised, st.pp.smooth, normalised, method=method, show_progress_bar=False, copy=True)
    call_checked(normalised, st.pp.select_genes, normalised, method="moran", n_genes=3, copy=True)
    call_checked(normalised, st.pp.spatial_graph, normalised, kind="knn", n_neighs=2, copy=True)
    call_checked(normalised, st.tl.make_splits, normalised)


@EXAMPLES
@given(small_slides())
def test_read_st_never_crashes_on_odd_tables(adata):
    names = [f"{c}x{r}" for r, c in zip(adata.obs.array_row, adata.obs.array_col, strict=True)]
    counts = pd.DataFrame(adata.X, index=names, columns=adata.var_names)
    spots = pd.DataFrame(
        {
            "x": adata.obs["array_col"].to_numpy(),
            "y": adata.obs["array_row"].to_numpy(),
            "pixel_x": adata.obsm["spatial"][:, 0],
            "pixel_y": adata.obsm["spatial"][:, 1],
        }
    )
    before = (counts.copy(), spots.copy())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read = st.io.read_st(counts, spots, None, library_id="s")
        assert read.n_obs <= len(spots)
    except OWN_ERRORS as error:
        assert raised_by_the_package(error), f"{type(error).__name__} from outside stpredict: {error}"
    pd.testing.assert_frame_equal(counts, before[0])
    pd.testing.assert_frame_equal(spots, before[1])
