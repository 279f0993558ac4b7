"""Gene-gene correlation analysis: measured vs predicted structure, its score and the side-by-side heatmaps."""

from __future__ import annotations

import numpy as np
import pytest

import stpredict as st
from stpredict._validate import get_matrix

GENES = ["ERBB2", "GRB7", "KRT8", "ACTB", "MUCL1", "CD74"]


@pytest.fixture
def predicted(crop_norm):
    adata = crop_norm[crop_norm.obs["library_id"] == "C4"].copy()
    values = get_matrix(adata, "log1p", columns=adata.var_names.get_indexer(GENES))
    layer = np.full(adata.shape, np.nan, dtype=np.float32)
    layer[:, adata.var_names.get_indexer(GENES)] = values
    adata.layers["perfect"] = layer
    rng = np.random.default_rng(0)
    noisy = layer.copy()
    noisy[:, adata.var_names.get_indexer(GENES)] = rng.normal(size=values.shape)
    adata.layers["noise"] = noisy
    return adata


def test_perfect_prediction_scores_one_and_noise_does_not(predicted):
    st.tl.gene_correlation(predicted, layer_true="log1p", layer_pred="perfect")
    record = predicted.uns["gene_correlation"]
    assert sorted(record["genes"]) == sorted(GENES) and record["score"] == pytest.approx(1.0)
    true = predicted.varp["gene_correlation_true"]
    assert true.shape == (predicted.n_vars, predicted.n_vars) and true.nnz <= len(GENES) ** 2
    out = st.tl.gene_correlation(predicted, layer_true="log1p", layer_pred="noise", copy=True)
    assert abs(out.uns["gene_correlation"]["score"]) < 0.7
    assert predicted.uns["gene_correlation"]["score"] == pytest.approx(1.0)  # copy=True left it alone


def test_errors_name_the_fix(predicted):
    with pytest.raises(ValueError, match="NaN for genes"):
        st.tl.gene_correlation(predicted, layer_true="log1p", layer_pred="perfect", genes=["ERBB2", "GRB7", "GNAS"])
    with pytest.raises(KeyError, match="not in adata.obs"):
        st.tl.gene_correlation(predicted, layer_true="log1p", layer_pred="perfect", library_id="C9")
    with pytest.raises(KeyError, match="run st.tl.gene_correlation"):
        st.pl.gene_correlation(predicted, key="missing")


def test_heatmaps_share_order_and_colour_scale(predicted):
    st.tl.gene_correlation(predicted, layer_true="log1p", layer_pred="noise")
    axes = st.pl.gene_correlation(predicted, show=False)
    assert [ax.get_title() for ax in axes] == ["measured", "predicted"]
    labels = [[t.get_text() for t in ax.get_xticklabels()] for ax in axes]
    assert labels[0] == labels[1] and sorted(labels[0]) == sorted(GENES)
    assert [ax.images[0].get_clim() for ax in axes] == [(-1, 1), (-1, 1)]
    measured = axes[0].images[0].get_array()
    np.testing.assert_allclose(np.diag(measured), 1.0, rtol=1e-6)
