from __future__ import annotations

import numpy as np
import pytest

import stpredict as st


def test_log1p_matches_definition_and_keeps_counts(crop):
    counts_before = crop.layers["counts"].copy()
    x_before = crop.X.copy()
    st.pp.normalize(crop)
    counts = crop.layers["counts"].toarray()
    expected = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    np.testing.assert_allclose(crop.layers["log1p"], expected, rtol=1e-5)
    assert (crop.layers["counts"] != counts_before).nnz == 0 and (crop.X != x_before).nnz == 0
    assert crop.uns["stpredict_normalize"]["log1p"]["target_sum"] == 1e4


def test_tpm_uses_gene_lengths(crop):
    st.pp.normalize(crop, method="tpm")
    lengths = st.pp.gene_lengths()
    assert lengths["ERBB2"] == 5663  # GENCODE v43 exon-union length (SEPAL's table)
    values = crop.layers["log2_tpm"]
    known = crop.var_names.isin(lengths.index)
    assert np.isnan(values[:, ~known]).all()
    tpm = np.exp2(values[:, known]) - 1
    np.testing.assert_allclose(np.nansum(tpm, axis=1), 1e6, rtol=1e-3)
    counts = crop.layers["counts"].toarray()
    i, a, b = 0, crop.var_names.get_loc("ERBB2"), crop.var_names.get_loc("GNAS")
    ratio = tpm[i, known[: a + 1].sum() - 1] / tpm[i, known[: b + 1].sum() - 1]
    expected = (counts[i, a] / lengths["ERBB2"]) / (counts[i, b] / lengths["GNAS"])
    assert ratio == pytest.approx(expected, rel=1e-3)


def test_copy_leaves_input_untouched(crop):
    out = st.pp.normalize(crop, copy=True)
    assert "log1p" in out.layers and "log1p" not in crop.layers


def test_normalize_errors(crop):
    with pytest.raises(KeyError, match="raw counts"):
        st.pp.normalize(crop, layer="missing")
    with pytest.raises(ValueError, match="Unknown method"):
        st.pp.normalize(crop, method="cpm")


def test_sparse_counts_too_big_for_a_dense_layer_give_the_same_values_sparse(crop, monkeypatch):
    """A Visium HD slide (500,000 bins x 18,000 genes) would need 34 GiB dense: sparse counts stay sparse."""
    import scipy.sparse as sp

    from stpredict.pp import _normalize

    dense = crop.copy()
    dense.layers["counts"] = sp.csr_matrix(dense.layers["counts"])
    st.pp.normalize(dense)
    monkeypatch.setattr(_normalize, "DENSE_LAYER_LIMIT", 0)  # as if the slide were that big
    big = crop.copy()
    big.layers["counts"] = sp.csr_matrix(big.layers["counts"])
    with pytest.warns(sp.SparseEfficiencyWarning):
        big.layers["counts"][0, 0] = 0  # an explicit zero stays zero
    st.pp.normalize(big)
    assert sp.issparse(big.layers["log1p"]) and big.layers["log1p"].dtype == np.float32
    np.testing.assert_allclose(big.layers["log1p"].toarray(), dense.layers["log1p"], rtol=1e-6, atol=1e-6)
    # the rest of the workflow reads a sparse layer
    st.pp.image_features(big, show_progress_bar=False)
    st.pp.select_genes(big, n_genes=20)
    train, test = big[big.obs.library_id != "C4"].copy(), big[big.obs.library_id == "C4"].copy()
    st.tl.fit(train, show_progress_bar=False).predict(test, key_added="pred")
    scores = st.tl.evaluate(test, layer_pred="pred", inplace=False)
    assert len(scores) == 20 and np.isfinite(scores["pearson"]).all()
    bad = crop.copy()
    bad.layers["counts"] = sp.csr_matrix(bad.layers["counts"])
    bad.layers["counts"].data[3] = -1.0
    with pytest.raises(ValueError, match="negative values"):
        st.pp.normalize(bad)
