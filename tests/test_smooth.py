from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from helpers import shared
from spcs_oracle import spcs_dense

import stpredict as st
from stpredict.pp._spcs import pattern_space, spcs


def _grid_adata(values: np.ndarray, rows, cols, library="s1", grid="square") -> ad.AnnData:
    obs = pd.DataFrame({"array_row": rows, "array_col": cols, "library_id": library})
    obs.index = [f"{library}_{i}" for i in range(len(obs))]
    adata = ad.AnnData(np.asarray(values, dtype=np.float32), obs=obs)
    adata.layers["log1p"] = adata.X.copy()
    adata.obsm["spatial"] = np.column_stack([cols, rows]).astype(float) * 100
    adata.uns["spatial"] = {library: {"metadata": {"grid": grid}}}
    return adata


def _slide_arrays(adata, library, genes=250):
    sub = adata[adata.obs["library_id"] == library]
    top = np.argsort(-sub.layers["log1p"].mean(axis=0))[:genes]
    x = np.asarray(sub.layers["log1p"][:, top], dtype=float)
    return x, sub.obs["array_row"].to_numpy(), sub.obs["array_col"].to_numpy()


def _assert_matches_oracle(x, rows, cols):
    out = spcs(x, rows, cols, "square")
    expected = spcs_dense(x, rows, cols, pattern_space(x))
    np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)
    assert np.abs(out - x).max() > 1e-2  # it does smooth


@pytest.mark.parametrize("library", ["C2", "C3", "C4"])
def test_spcs_numba_equals_dense_oracle_on_fixture(crop, library):
    st.pp.normalize(crop)
    _assert_matches_oracle(*_slide_arrays(crop, library))


@pytest.mark.shared_data
@pytest.mark.parametrize("section", ["C2", "C5"])
def test_spcs_numba_equals_dense_oracle_on_full_her2st_sections(section):
    root = shared("her2st")
    image = next((root / "images").glob(f"{section}_*.jpg"))
    adata = st.io.read_st(root / "counts" / f"{section}.tsv.gz", root / "spots" / f"{section}_selection.tsv", image)
    st.pp.normalize(adata)
    _assert_matches_oracle(*_slide_arrays(adata, section))


def test_spcs_hex_grid_matches_oracle():
    rng = np.random.default_rng(1)
    rows, cols = np.meshgrid(np.arange(12), np.arange(24), indexing="ij")
    keep = (rows + cols) % 2 == 0  # Visium doubled-column indexing
    rows, cols = rows[keep], cols[keep]
    x = np.log1p(rng.poisson(2.0, size=(len(rows), 40)).astype(float))
    np.testing.assert_allclose(
        spcs(x, rows, cols, "hex"), spcs_dense(x, rows, cols, pattern_space(x), hexagonal=True), atol=1e-6
    )


def test_spcs_alpha_zero_is_identity_and_constant_gene_stays(crop):
    st.pp.normalize(crop)
    crop.layers["log1p"][:, 0] = 3.0
    st.pp.smooth(crop, method="spcs", alpha=0.0, key_added="a0", show_progress_bar=False)
    np.testing.assert_array_equal(crop.layers["a0"], crop.layers["log1p"])
    st.pp.smooth(crop, method="spcs", show_progress_bar=False)
    np.testing.assert_allclose(crop.layers["log1p_spcs"][:, 0], 3.0, atol=1e-5)
    assert crop.uns["stpredict_smooth"]["log1p_spcs"]["params"]["tau_p"] == 16


def test_8n_on_hand_made_square_grid():
    rows, cols = np.divmod(np.arange(9), 3)
    values = np.arange(1, 10, dtype=float)[:, None]  # 1 2 3 / 4 5 6 / 7 8 9
    adata = _grid_adata(values, rows, cols)
    st.pp.smooth(adata, method="8n", show_progress_bar=False)
    got = adata.layers["log1p_8n"].ravel()
    assert got[4] == pytest.approx(5.0)  # centre: all nine
    assert got[0] == pytest.approx((1 + 2 + 4 + 5) / 4)  # corner: itself and 3 neighbours
    assert got[1] == pytest.approx((1 + 2 + 3 + 4 + 5 + 6) / 6)  # edge: 6 spots


def test_8n_on_hex_grid_uses_six_neighbours():
    # centre (2, 2) and its 6 hex neighbours in doubled-column indexing, plus one far spot
    coords = [(2, 2), (2, 0), (2, 4), (1, 1), (1, 3), (3, 1), (3, 3), (0, 8)]
    rows, cols = map(np.array, zip(*coords, strict=True))
    values = np.array([0, 1, 2, 3, 4, 5, 6, 100], dtype=float)[:, None]
    adata = _grid_adata(values, rows, cols, grid="hex")
    st.pp.smooth(adata, method="8n", show_progress_bar=False)
    assert adata.layers["log1p_8n"][0, 0] == pytest.approx(sum(range(7)) / 7)
    assert adata.layers["log1p_8n"][7, 0] == pytest.approx(100.0)


def test_adaptive_median_replaces_only_zeros_with_right_mask():
    rows, cols = np.divmod(np.arange(9), 3)
    values = np.array([[0, 2, 2], [2, 0, 4], [4, 4, 0]], dtype=float).reshape(9, 1)
    adata = _grid_adata(values, rows, cols)
    st.pp.smooth(adata, method="adaptive_median", show_progress_bar=False)
    out = adata.layers["log1p_adaptive_median"].ravel()
    mask = adata.layers["log1p_adaptive_median_imputed"].ravel()
    np.testing.assert_array_equal(mask, values.ravel() == 0)
    np.testing.assert_array_equal(out[~mask], values.ravel()[~mask])
    # ring 1 (distance 1, self included): centre median(0,2,2,4,4)=2, top-left median(0,2,2)=2,
    # bottom-right median(0,4,4)=4
    assert out[4] == 2 and out[0] == 2 and out[8] == 4


def test_adaptive_median_on_real_slide(crop):
    st.pp.normalize(crop)
    st.pp.smooth(crop, method="adaptive_median", show_progress_bar=False)
    before, after = crop.layers["log1p"], crop.layers["log1p_adaptive_median"]
    mask = crop.layers["log1p_adaptive_median_imputed"]
    np.testing.assert_array_equal(mask, before == 0)
    np.testing.assert_array_equal(after[~mask], before[~mask])
    assert (after[mask] > 0).mean() > 0.2  # many dropouts get a non-zero neighbourhood median


def test_eags_is_weighted_mean_of_other_spots(crop):
    st.pp.normalize(crop)
    crop.layers["log1p"][:, 0] = 2.5
    st.pp.smooth(crop, method="eags", show_progress_bar=False)
    out = crop.layers["log1p_eags"]
    np.testing.assert_allclose(out[:, 0], 2.5, atol=1e-5)
    x = crop.layers["log1p"]
    assert (out.min(axis=0) >= x.min(axis=0) - 1e-5).all() and (out.max(axis=0) <= x.max(axis=0) + 1e-5).all()


def test_spcs_rescaled_into_8n_range(crop):
    st.pp.normalize(crop)
    st.pp.smooth(crop, method="8n", show_progress_bar=False)
    st.pp.smooth(crop, method="spcs", rescale_to_8n=True, key_added="spcs8n", show_progress_bar=False)
    for lib in ["C2", "C3"]:
        m = (crop.obs["library_id"] == lib).to_numpy()
        assert crop.layers["spcs8n"][m].min() == pytest.approx(crop.layers["log1p_8n"][m].min(), abs=1e-5)
        assert crop.layers["spcs8n"][m].max() == pytest.approx(crop.layers["log1p_8n"][m].max(), abs=1e-5)


@pytest.mark.parametrize("method", ["8n", "spcs", "adaptive_median", "eags"])
def test_smoothing_stays_within_each_slide_and_keeps_inputs(crop, method):
    st.pp.normalize(crop)
    x_before, counts_before = crop.X.copy(), crop.layers["counts"].copy()
    reference = st.pp.smooth(crop, method=method, copy=True, show_progress_bar=False).layers[f"log1p_{method}"]
    assert (crop.X != x_before).nnz == 0 and (crop.layers["counts"] != counts_before).nnz == 0
    assert f"log1p_{method}" not in crop.layers  # copy=True left the input alone
    other = (crop.obs["library_id"] == "C4").to_numpy()
    crop.layers["log1p"][other] = np.random.default_rng(0).permutation(crop.layers["log1p"][other])
    changed = st.pp.smooth(crop, method=method, copy=True, show_progress_bar=False).layers[f"log1p_{method}"]
    np.testing.assert_allclose(changed[~other], reference[~other], atol=1e-6)


def test_smooth_refuses_missing_grid_columns(crop):
    st.pp.normalize(crop)
    del crop.obs["array_col"]
    with pytest.raises(KeyError, match="array_col"):
        st.pp.smooth(crop, method="8n")


def test_smooth_rejects_unknown_parameters(crop):
    st.pp.normalize(crop)
    with pytest.raises(TypeError, match="tau_q"):
        st.pp.smooth(crop, method="spcs", tau_q=3)


def test_genes_missing_everywhere_stay_missing_and_partial_nan_is_refused(crop):
    """TPM leaves genes without a length NaN in every spot: they pass through; a NaN in some spots does not."""
    st.pp.normalize(crop, method="tpm")
    values = crop.layers["log2_tpm"]
    absent = np.isnan(values).all(axis=0)
    assert absent.any() and not np.isnan(values[:, ~absent]).any()
    st.pp.smooth(crop, method="adaptive_median", layer="log2_tpm", key_added="am", show_progress_bar=False)
    assert np.isnan(crop.layers["am"][:, absent]).all() and not crop.layers["am_imputed"][:, absent].any()
    complete = crop[:, ~absent].copy()
    st.pp.smooth(complete, method="adaptive_median", layer="log2_tpm", key_added="am", show_progress_bar=False)
    np.testing.assert_array_equal(crop.layers["am"][:, ~absent], complete.layers["am"])
    np.testing.assert_array_equal(crop.layers["am_imputed"][:, ~absent], complete.layers["am_imputed"])
    crop.layers["holes"] = np.where(np.eye(crop.n_obs, crop.n_vars, dtype=bool), np.nan, 1.0)
    with pytest.raises(ValueError, match="NaN for some spots of gene"):
        st.pp.smooth(crop, method="8n", layer="holes")


def test_neighbour_search_used_is_recorded_per_slide(crop):
    adata = crop.copy()
    st.pp.normalize(adata)
    st.pp.smooth(adata, method="spcs", show_progress_bar=False)
    searches = adata.uns["stpredict_smooth"]["log1p_spcs"]["neighbour_search"]
    assert set(searches) == set(adata.obs["library_id"].cat.categories)
    assert set(searches.values()) <= {"kdtree", "brute", "scan"}  # small slides: always exact
    st.pp.smooth(adata, method="eags", exact=False, show_progress_bar=False)
    assert set(adata.uns["stpredict_smooth"]["log1p_eags"]["neighbour_search"].values()) == {"pynndescent"}
    st.pp.smooth(adata, method="8n", show_progress_bar=False)
    assert "neighbour_search" not in adata.uns["stpredict_smooth"]["log1p_8n"]
