"""What users do with predictions: regions, their agreement with labels, markers and gene-set enrichment."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy.stats import hypergeom

import stpredict as st


@pytest.fixture
def gmt(tmp_path):
    path = tmp_path / "small.gmt"
    path.write_text(
        "SET_A\tdesc\tG1\tG2\tG3\tG4\tG5\tG6\n"
        "SET_B\tdesc\tG5\tG6\tG7\tG8\tG9\n"
        "SET_C\tdesc\tG10\tG11\tG12\tG13\tG14\tOUTSIDE\n"
        "TINY\tdesc\tG1\tG2\n"
    )
    return path


def test_enrichment_pvalues_and_bh_equal_hand_computation(gmt):
    background = [f"G{i}" for i in range(1, 31)]  # N = 30
    query = ["G1", "G2", "G3", "G5", "G7", "G20"]  # n = 6
    table = st.tl.enrichment(query, gene_sets=gmt, background=background).set_index("set")
    assert "TINY" not in table.index  # 2 background genes < min_size
    # SET_A: k=4 of K=6; SET_B: k=2 of K=5; SET_C: k=0 of K=5 (OUTSIDE is not in the background)
    expected = {"SET_A": hypergeom.sf(3, 30, 6, 6), "SET_B": hypergeom.sf(1, 30, 5, 6), "SET_C": 1.0}
    for name, p in expected.items():
        assert table.loc[name, "pvalue"] == pytest.approx(p, rel=1e-12)
    assert table.loc["SET_C", "set_size"] == 5 and table.loc["SET_A", "genes"] == ["G1", "G2", "G3", "G5"]
    # Benjamini-Hochberg by hand: sorted p, p_(i) * m / i, cumulative minimum from the largest
    p = np.array([expected["SET_A"], expected["SET_B"], expected["SET_C"]])
    order = np.argsort(p)
    adjusted = np.minimum.accumulate((p[order] * 3 / np.arange(1, 4))[::-1])[::-1]
    hand = dict(zip(np.array(["SET_A", "SET_B", "SET_C"])[order], np.minimum(adjusted, 1), strict=True))
    for name, value in hand.items():
        assert table.loc[name, "padj"] == pytest.approx(value, rel=1e-12)


def test_enrichment_of_a_de_table_uses_the_tested_genes_as_background(gmt):
    de = pd.DataFrame(
        {
            "group": ["r1"] * 4 + ["r2"] * 4,
            "names": ["G1", "G2", "G3", "G9"] * 2,
            "pvals_adj": [0.01, 0.01, 0.5, 0.01, 0.01, 0.2, 0.2, 0.01],
            "logfoldchanges": [1.0, 2.0, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0],
        }
    )
    table = st.tl.enrichment(de, gene_sets=gmt, min_size=1)
    assert set(table["group"]) == {"r1", "r2"} and (table["n_background"] == 4).all()
    r1 = table[table["group"] == "r1"].set_index("set")
    assert r1.loc["SET_A", "n_query"] == 2 and r1.loc["SET_A", "overlap"] == 2  # G1, G2 up; G9 down
    assert st.datasets.gene_sets("hallmark")["HALLMARK_E2F_TARGETS"][:2] == ["AURKA", "BRCA2"]


def test_region_agreement_is_one_for_identical_partitions(crop):
    crop.obs["truth"] = np.where(crop.obsm["spatial"][:, 0] > np.median(crop.obsm["spatial"][:, 0]), "tumour", "stroma")
    crop.obs["renamed"] = crop.obs["truth"].map({"tumour": "3", "stroma": "7"})
    crop.obs.loc[crop.obs_names[:5], "truth"] = np.nan  # unlabelled spots are left out
    table = st.tl.region_agreement(crop, key_pred="renamed", key_true="truth")
    assert (table["ari"] == 1.0).all() and np.allclose(table["nmi"], 1.0)
    assert table.loc["all", "n_spots"] == crop.n_obs - 5
    crop.obs["random"] = np.random.default_rng(0).integers(0, 2, crop.n_obs).astype(str)
    assert abs(st.tl.region_agreement(crop, key_pred="random", key_true="truth").loc["all", "ari"]) < 0.2


def test_regions_markers_and_enrichment_on_predictions(crop_norm):
    train, test = crop_norm[crop_norm.obs.library_id != "C4"].copy(), crop_norm[crop_norm.obs.library_id == "C4"].copy()
    st.pp.select_genes(train, n_genes=100)
    predictor = st.tl.fit(train)
    predictor.predict(test, key_added="pred")  # NaN for the genes not predicted
    st.tl.cluster_predictions(test, layer="pred", resolution=0.5)
    assert test.obs["pred_clusters"].nunique() >= 2 and test.uns["pred_clusters"]["n_genes"] == 100
    st.tl.differential_expression(test, groupby="pred_clusters", layer="pred")
    de = test.uns["de"]
    assert set(de["names"]) <= set(predictor.genes) and de["group"].nunique() == test.obs["pred_clusters"].nunique()
    table = st.tl.enrichment(de, gene_sets="hallmark", min_size=3)
    assert (table["n_background"] == 100).all() and table["padj"].between(0, 1).all()
    kmeans = st.tl.cluster_predictions(test, layer="pred", n_clusters=2, key_added="k2", copy=True)
    assert kmeans.obs["k2"].nunique() == 2 and "k2" not in test.obs


def test_regions_of_an_image_only_slide_use_the_predicted_dataframe(crop_norm):
    train = crop_norm[crop_norm.obs.library_id != "C4"].copy()
    files = st.datasets.her2st_crop_files()["C4"]
    image_only = st.io.read_st(None, files["spots"], files["image"], library_id="C4")
    assert image_only.n_vars == 0
    genes = ["ERBB2", "GNAS", "FASN", "CD24", "KRT19", "IGKC"]
    st.tl.fit(train, genes=genes).predict(image_only, key_added="pred")
    st.tl.cluster_predictions(image_only, layer="pred", n_clusters=2)
    assert image_only.uns["pred_clusters"]["n_genes"] == len(genes)
    st.tl.differential_expression(image_only, groupby="pred_clusters", layer="pred")
    de = image_only.uns["de"]
    assert sorted(de["names"].unique()) == sorted(genes)
    # the same clustering as on an AnnData built by hand from the DataFrame
    frame = image_only.obsm["pred"]
    by_hand = ad.AnnData(frame.to_numpy(), obs=pd.DataFrame(index=frame.index), var=pd.DataFrame(index=frame.columns))
    st.tl.cluster_predictions(by_hand, layer=None, n_clusters=2)
    image_only.obs["by_hand"] = by_hand.obs["pred_clusters"].to_numpy()
    assert st.tl.region_agreement(image_only, key_pred="pred_clusters", key_true="by_hand").loc["all", "ari"] == 1.0


def test_label_reader_matches_spots_by_array_position(crop, tmp_path):
    c2 = crop.obs[crop.obs["library_id"] == "C2"]
    rows = c2.iloc[:10]
    table = pd.DataFrame(
        {  # as the HER2ST files: the spot detector's adjusted positions, off the grid by a few hundredths
            "Row.names": [f"r{i}" for i in range(10)],
            "x": rows["array_col"].to_numpy() + 0.04,
            "y": rows["array_row"].to_numpy() - 0.03,
            "pixel_x": 0.0,
            "pixel_y": 0.0,
            "label": ["invasive cancer"] * 5 + ["connective tissue"] * 5,
        }
    )
    path = tmp_path / "C2_labeled_coordinates.tsv"
    table.to_csv(path, sep="\t", index=False)
    assert st.io.read_pathologist_labels(path).index[0] == f"{rows['array_col'].iloc[0]}x{rows['array_row'].iloc[0]}"
    st.io.read_pathologist_labels(path, crop)
    labelled = crop.obs["pathologist_label"]
    assert labelled.notna().sum() == 10 and (labelled[rows.index[:5]] == "invasive cancer").all()
    with pytest.raises(KeyError, match="pass library_id"):
        st.io.read_pathologist_labels(path, crop, library_id="Z9")


@pytest.mark.shared_data
def test_pathologist_regions_of_an_expression_only_section():
    from helpers import shared

    root = shared("her2st")
    adata = st.io.read_st(root / "counts" / "C1.tsv.gz", root / "spots" / "C1_selection.tsv", None, patient="C")
    assert adata.uns["spatial"]["C1"]["images"] == {}  # no public image: expression and positions only
    st.io.read_pathologist_labels(root / "pathologist_labels" / "C1_labeled_coordinates.tsv", adata)
    assert adata.obs["pathologist_label"].notna().sum() == 176
    st.pp.normalize(adata)
    st.pp.select_genes(adata, n_genes=250)
    adata = adata[:, adata.uns["selected"]["genes"]].copy()
    st.tl.cluster_predictions(adata, layer="log1p", n_clusters=4)
    agreement = st.tl.region_agreement(adata, key_pred="pred_clusters", key_true="pathologist_label")
    assert agreement.loc["C1", "ari"] > 0.05  # measured expression separates cancer from connective tissue


def test_enrichment_and_region_plots_draw_the_data(crop_norm):
    sets = {
        "A": ["g1", "g2", "g3", "g4", "g5"],
        "B": ["g6", "g7", "g8", "g9", "g10"],
        "C": ["g11", "g12", "g13", "g14", "g15"],
    }
    table = st.tl.enrichment(["g1", "g2", "g3", "g6"], gene_sets=sets, background=[f"g{i}" for i in range(1, 21)])
    ax = st.pl.enrichment(table, show=False)
    drawn = ax.collections[0].get_offsets()
    shown = table.nsmallest(15, ["padj", "pvalue"]).iloc[::-1]
    np.testing.assert_allclose(drawn[:, 0], shown["gene_ratio"])
    np.testing.assert_allclose(ax.collections[0].get_array(), -np.log10(shown["padj"]))
    st.tl.cluster_predictions(crop_norm, layer="log1p", n_clusters=3)
    crop_norm.obs["half"] = np.where(
        crop_norm.obsm["spatial"][:, 1] > np.median(crop_norm.obsm["spatial"][:, 1]), "a", "b"
    )
    axes = st.pl.regions(crop_norm, key_true="half", library_id="C3", show=False)
    c3 = (crop_norm.obs["library_id"] == "C3").to_numpy()
    points = sum(len(c.get_offsets()) for c in axes[0].collections)
    assert points == c3.sum() and "ARI" in axes[0].get_title()


def test_smoothing_histogram_counts_the_layers_values(crop_norm):
    st.pp.smooth(crop_norm, method="8n", layer="log1p", key_added="log1p_8n", show_progress_bar=False)
    genes = ["ERBB2", "GNAS", "FASN"]
    ax = st.pl.smoothing_histogram(crop_norm, layers=["log1p", "log1p_8n"], genes=genes, bins=20, show=False)
    from stpredict._validate import get_matrix

    columns = crop_norm.var_names.get_indexer(genes)
    raw, smooth = (get_matrix(crop_norm, layer, columns=columns).ravel() for layer in ("log1p", "log1p_8n"))
    edges = np.linspace(min(raw.min(), smooth.min()), max(raw.max(), smooth.max()), 21)
    drawn = [patch.get_path().vertices for patch in ax.patches]
    assert len(drawn) == 2
    counts = np.histogram(raw, bins=edges)[0]
    step_heights = drawn[0][1:-1:2, 1][: len(counts)]  # a step outline visits each bin's height twice
    np.testing.assert_allclose(step_heights, counts)
    assert "zeros" in ax.get_legend().get_texts()[0].get_text()
    with pytest.raises(KeyError, match="not found in adata.layers"):
        st.pl.smoothing_histogram(crop_norm, layers=["log1p", "nope"], show=False)
