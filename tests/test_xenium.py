"""Xenium with a post-run H&E: pseudo-spots and cells placed on the H&E through the alignment, trained on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from xenium_fixture import PIXEL_SIZE, alignment_matrix, write_xenium

import stpredict as st


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_xenium(tmp_path_factory.mktemp("xenium"))


def test_pseudo_spots_count_genes_only_and_sit_on_the_he(run):
    out, he, alignment = run
    adata = st.io.read_xenium(out, he_image=he, alignment=alignment, spot_size_um=100, min_transcripts=1)
    assert adata.var_names.tolist() == ["DARK", "FLAT", "PALE"]  # control probes dropped
    transcripts = pd.read_parquet(out / "transcripts.parquet")
    good = transcripts[(transcripts.qv >= 20) & ~transcripts.feature_name.str.startswith("NegControl")]
    assert adata.X.sum() == len(good)  # every good transcript in exactly one pseudo-spot, low-quality ones out
    spot = adata.obs.iloc[3]
    inside = good[
        (np.floor(good.x_location / 100) == spot.array_col) & (np.floor(good.y_location / 100) == spot.array_row)
    ]
    assert adata.X[3].sum() == len(inside)
    # the centre (µm) back through the alignment lands where the transcripts' H&E pixels are
    he_mpp = adata.uns["spatial"]["xenium"]["scalefactors"]["microns_per_pixel"]
    assert he_mpp == pytest.approx(st.datasets.her2st_crop().uns["spatial"]["C4"]["scalefactors"]["microns_per_pixel"])
    matrix = alignment_matrix(he_mpp)
    xenium_px = np.append(adata.obsm["spatial"][3], 1.0) @ matrix.T
    np.testing.assert_allclose(xenium_px[:2] * PIXEL_SIZE, adata.obsm["spatial_um"][3], atol=1e-6)
    slide = adata.uns["spatial"]["xenium"]
    assert slide["metadata"]["spot_shape"] == "square"
    assert slide["scalefactors"]["spot_diameter_fullres"] == pytest.approx(100 / he_mpp)


def test_cells_and_errors(run, tmp_path):
    out, he, alignment = run
    cells = st.io.read_xenium(out, he_image=he, alignment=alignment, level="cells")
    assert cells.var_names.tolist() == ["DARK", "FLAT", "PALE"] and cells.n_obs > 1000
    with pytest.raises(ValueError, match="not a 3 x 3 affine"):
        (tmp_path / "bad.csv").write_text("1,0\n0,1\n")
        st.io.read_xenium(out, he_image=he, alignment=tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="not the inverse"):  # the inverse matrix puts every spot off the image
        st.io.read_xenium(out, he_image=he, alignment=np.linalg.inv(alignment_matrix(0.69)))
    with pytest.raises(ValueError, match="not a 3 x 3 affine"):
        st.io.read_xenium(out, he_image=he, alignment=np.eye(3) * 2)
    with pytest.raises(FileNotFoundError, match="transcripts.parquet"):
        st.io.read_xenium(tmp_path, he_image=he, alignment=alignment)


def test_models_train_on_pseudo_spots_and_predict_from_the_he(run):
    out, he, alignment = run
    adata = st.io.read_xenium(out, he_image=he, alignment=alignment, spot_size_um=55)
    st.pp.normalize(adata)
    st.pp.image_features(adata, size=55, unit="um", show_progress_bar=False)
    left = adata.obs["array_col"] < np.median(adata.obs["array_col"])  # one half trains, the other half tests
    train, test = adata[left].copy(), adata[~left].copy()
    test.obs["library_id"] = test.obs["library_id"].cat.rename_categories(["xenium_right"])
    test.uns["spatial"] = {"xenium_right": test.uns["spatial"]["xenium"]}
    predictor = st.tl.fit(train, genes=["DARK", "PALE", "FLAT"], use_rep="X_handcrafted")
    predictor.predict(test)
    scores = st.tl.evaluate(test, layer_pred="pred_ridge", inplace=False).set_index("gene")["pearson"]
    assert scores["DARK"] > 0.3 and scores["PALE"] > 0.3, scores  # the image under the spot drives them


def test_cells_trained_on_pseudo_spots_beat_the_nearest_spot_at_measured_cells(run):
    """Below the spot with measured truth: spot2cell trained on one half's pseudo-spots (55 µm, the sums of
    Xenium's cells), its nuclei on the other half scored against the nearest measured Xenium cell."""
    from scipy.spatial import cKDTree

    out, he, alignment = run
    cells = st.io.read_xenium(out, he_image=he, alignment=alignment, level="cells")
    cells.layers["counts"] = cells.X.copy()
    left = cells.obsm["spatial"][:, 0] < np.median(cells.obsm["spatial"][:, 0])
    halves = {}
    for name, part in (("train", left), ("test", ~left)):
        spots = st.pp.pseudo_spots(cells[part].copy(), diameter_um=55, pitch_um=100)
        spots.layers["counts"] = spots.X.copy()
        halves[name] = st.pp.normalize(spots, copy=True)
    genes = ["DARK", "PALE"]
    predictor = st.tl.fit(halves["train"], model="spot2cell", genes=genes, model_params={"max_epochs": 15})
    measured = st.pp.normalize(cells[~left].copy(), copy=True)
    (x0, y0), (x1, y1) = measured.obsm["spatial"].min(axis=0), measured.obsm["spatial"].max(axis=0)
    nuclei = st.tl.super_resolve(predictor, measured, region=(x0, y0, x1, y1), cells=True)
    distance, cell = cKDTree(measured.obsm["spatial"]).query(nuclei.obsm["spatial"])
    mpp = measured.uns["spatial"]["xenium"]["scalefactors"]["microns_per_pixel"]
    close = distance * mpp < 8  # a nucleus and the Xenium cell it lies in
    truth = _dense(measured[:, genes].layers["log1p"])[cell[close]]
    test_spots = halves["test"]
    nearest = cKDTree(test_spots.obsm["spatial"]).query(nuclei.obsm["spatial"][close])[1]
    oracle = _dense(test_spots[:, genes].layers["log1p"])[nearest]
    for k, gene in enumerate(genes):
        model_r = np.corrcoef(nuclei[:, gene].X.ravel()[close], truth[:, k])[0, 1]
        oracle_r = np.corrcoef(oracle[:, k], truth[:, k])[0, 1]
        assert model_r > 0.1 and model_r > oracle_r + 0.05, (gene, model_r, oracle_r)


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.todense() if hasattr(matrix, "todense") else matrix)
