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
