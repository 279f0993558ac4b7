"""CosMx flat files with a registered H&E: the Xenium fixture's transcripts and cells rewritten as a CosMx export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from xenium_fixture import PIXEL_SIZE, write_xenium

import stpredict as st
from stpredict.io._cosmx import COSMX_PIXEL_SIZE


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run as Xenium output and as CosMx flat files (tx_file, exprMat_file, metadata_file)."""
    root = tmp_path_factory.mktemp("cosmx")
    xenium, he, alignment = write_xenium(root, n_transcripts=40_000)
    tx = pd.read_parquet(xenium / "transcripts.parquet")
    tx = tx[tx.qv >= 20]  # CosMx exports only decoded transcripts
    cosmx = root / "cosmx"
    cosmx.mkdir()
    targets = tx.feature_name.str.replace("NegControlProbe_00042", "NegPrb3", regex=False)
    pd.DataFrame({
        "fov": 1, "cell_ID": 0, "x_global_px": tx.x_location / COSMX_PIXEL_SIZE, "y_global_px": tx.y_location / COSMX_PIXEL_SIZE,
        "x_local_px": 0.0, "y_local_px": 0.0, "z": 1, "target": targets, "CellComp": "None",
    }).to_csv(cosmx / "Run5_tx_file.csv.gz", index=False)  # fmt: skip
    cells = pd.read_parquet(xenium / "cells.parquet")
    counts = st.io.read_xenium(xenium, he_image=he, alignment=alignment, level="cells")
    matrix = pd.DataFrame(counts.X.toarray(), columns=counts.var_names)
    matrix.insert(0, "cell_ID", np.arange(1, len(cells) + 1))
    matrix.insert(0, "fov", 1)
    matrix["NegPrb3"] = 1
    matrix.loc[len(matrix)] = [1, 0, *[5] * (matrix.shape[1] - 2)]  # cell 0: outside every cell
    matrix.to_csv(cosmx / "Run5_exprMat_file.csv.gz", index=False)
    pd.DataFrame({
        "fov": 1, "cell_ID": np.arange(1, len(cells) + 1), "Area": 150.0 / COSMX_PIXEL_SIZE**2,
        "CenterX_global_px": cells.x_centroid / COSMX_PIXEL_SIZE, "CenterY_global_px": cells.y_centroid / COSMX_PIXEL_SIZE,
    }).iloc[::-1].to_csv(cosmx / "Run5_metadata_file.csv.gz", index=False)  # fmt: skip
    # H&E pixels -> CosMx global pixels: Xenium's alignment, then Xenium pixels -> CosMx pixels
    to_cosmx = np.diag([PIXEL_SIZE / COSMX_PIXEL_SIZE] * 2 + [1.0]) @ st.io._xenium.read_alignment(alignment)
    return xenium, cosmx, he, alignment, to_cosmx


def test_pseudo_spots_and_cells_land_where_xeniums_do(runs):
    xenium, cosmx, he, alignment, to_cosmx = runs
    spots = st.io.read_cosmx(cosmx, he_image=he, alignment=to_cosmx, spot_size_um=100, min_transcripts=1)
    same = st.io.read_xenium(xenium, he_image=he, alignment=alignment, spot_size_um=100, min_transcripts=1)
    assert spots.var_names.tolist() == ["DARK", "FLAT", "PALE"]  # negative probes dropped
    assert (spots.obs_names == same.obs_names).all() and (spots.X != same.X).nnz == 0
    np.testing.assert_allclose(spots.obsm["spatial"], same.obsm["spatial"], atol=1e-3)
    he_mpp = spots.uns["spatial"]["cosmx"]["scalefactors"]["microns_per_pixel"]
    assert he_mpp == pytest.approx(same.uns["spatial"]["xenium"]["scalefactors"]["microns_per_pixel"])
    cells = st.io.read_cosmx(cosmx, he_image=he, alignment=to_cosmx, level="cells")
    xenium_cells = st.io.read_xenium(xenium, he_image=he, alignment=alignment, level="cells")
    assert cells.n_obs == xenium_cells.n_obs and cells.var_names.tolist() == ["DARK", "FLAT", "PALE"]
    # metadata rows were written in reverse: every cell still gets its own centre and counts
    np.testing.assert_allclose(cells.obsm["spatial"], xenium_cells.obsm["spatial"], atol=1e-3)
    assert (cells.X != xenium_cells.X).nnz == 0
    assert cells.uns["spatial"]["cosmx"]["scalefactors"]["spot_diameter_fullres"] * he_mpp == pytest.approx(
        2 * np.sqrt(150 / np.pi)
    )


def test_models_train_on_cosmx_spots_and_errors_are_clear(runs, tmp_path):
    _, cosmx, he, _, to_cosmx = runs
    adata = st.io.read_cosmx(cosmx, he_image=he, alignment=to_cosmx, spot_size_um=55)
    st.pp.normalize(adata)
    st.pp.image_features(adata, size=55, unit="um", show_progress_bar=False)
    left = adata.obs["array_col"] < np.median(adata.obs["array_col"])  # one half trains, the other half tests
    train, test = adata[left].copy(), adata[~left].copy()
    test.obs["library_id"] = test.obs["library_id"].cat.rename_categories(["cosmx_right"])
    test.uns["spatial"] = {"cosmx_right": test.uns["spatial"]["cosmx"]}
    st.tl.fit(train, genes=["DARK", "PALE", "FLAT"], use_rep="X_handcrafted").predict(test)
    scores = st.tl.evaluate(test, layer_pred="pred_ridge", inplace=False).set_index("gene")["pearson"]
    assert scores["DARK"] > 0.3 and scores["PALE"] > 0.3, scores  # the image under the spot drives them
    csv = tmp_path / "he_to_cosmx.csv"
    pd.DataFrame(to_cosmx).to_csv(csv, header=False, index=False)
    from stpredict.cli import read_slide  # the command line recognises the export folder

    by_cli = read_slide(cosmx, {"he_image": str(he), "alignment": str(csv), "spot_size_um": 55})
    assert by_cli.n_obs == adata.n_obs and by_cli.uns["spatial"]["cosmx"]["metadata"]["technology"].startswith("Nano")
    with pytest.raises(FileNotFoundError, match="tx_file"):
        st.io.read_cosmx(tmp_path, he_image=he, alignment=to_cosmx)
    with pytest.raises(ValueError, match="not the inverse"):
        st.io.read_cosmx(cosmx, he_image=he, alignment=np.linalg.inv(to_cosmx))
