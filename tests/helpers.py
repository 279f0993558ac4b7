"""Test helpers shared by several test modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The real data sets beside the repository (read-only, never committed); tests using them skip when absent.
SHARED_DATA = Path(os.environ.get("STPREDICT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared(*parts: str) -> Path:
    """Path inside the shared real data, skipping the test when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available at {path}")
    return path


def write_hest_sample(root: Path, sample_id: str, section: str, patient: str) -> None:
    """A HEST-1k sample (``st/<id>.h5ad``, ``wsis/<id>.tif``, ``metadata/<id>.json``) from a bundled section."""
    import json

    import numpy as np
    from PIL import Image

    import stpredict as st

    crop = st.datasets.her2st_crop()
    adata = crop[crop.obs["library_id"] == section].copy()
    mpp = adata.uns["spatial"][section]["scalefactors"]["microns_per_pixel"]
    image = np.asarray(Image.open(st.datasets.her2st_crop_files()[section]["image"]).convert("RGB"))
    for folder in ("st", "wsis", "metadata"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    adata.obs_names = adata.obs["spot_id"].astype(str).to_numpy()
    adata.obs = adata.obs[["array_row", "array_col"]]
    del adata.uns["spatial"]
    adata.write_h5ad(root / "st" / f"{sample_id}.h5ad")
    st.io.write_pyramidal_tiff(image, root / "wsis" / f"{sample_id}.tif", mpp=mpp, compression="zlib")
    meta = {"pixel_size_um_estimated": mpp, "spot_diameter": 100.0, "inter_spot_dist": 200.0,
            "st_technology": "Spatial Transcriptomics", "patient": patient}  # fmt: skip
    (root / "metadata" / f"{sample_id}.json").write_text(json.dumps(meta))


def model_test_module(model: str):
    """The model's own test file (``tests/models/test_<model>.py``) as a module, or ``None``.

    A new model brings its small contract settings (``CONTRACT_PARAMS``) and its learning test there, so that
    adding one never means editing the shared test files.
    """
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).parent / "models" / f"test_{model}.py"
    if not path.is_file():
        return None
    name = f"_model_tests_{model}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def declared(model: str, name: str, default=None):
    """A constant the model's own test file declares (e.g. ``CONTRACT_PARAMS``), else ``default``."""
    module = model_test_module(model)
    return getattr(module, name, default) if module is not None else default


def write_hest_patches(root: Path, sample_id: str, *, drop: int = 0, side: int = 224, mpp: float = 0.5) -> None:
    """HEST's ``patches/<id>.h5`` for a sample written by :func:`write_hest_sample`: ``img`` (n, side, side, 3)
    uint8 at ``mpp`` µm/px centred on each spot, ``coords`` (top-left corners in WSI pixels), ``barcode`` (n, 1)
    bytes; the first ``drop`` spots left out (HEST drops spots over little tissue)."""
    import h5py
    import numpy as np

    import stpredict as st

    adata = st.io.read_hest(root, sample_id, patches=False)
    patches = st.pp.extract_patches(adata, size=side, unit="px", target_mpp=mpp)[drop:]
    slide_mpp = adata.uns["spatial"][sample_id]["scalefactors"]["microns_per_pixel"]
    corners = (adata.obsm["spatial"] - side * mpp / slide_mpp // 2).astype(int)[drop:]
    (root / "patches").mkdir(exist_ok=True)
    with h5py.File(root / "patches" / f"{sample_id}.h5", "w") as handle:
        handle["img"] = patches
        handle["coords"] = corners
        handle["barcode"] = np.array([[b.encode()] for b in adata.obs["spot_id"].to_numpy()[drop:]])


#: iStar's small settings shared by its tests (seconds on the crop)
ISTAR_SMALL = {"max_epochs": 5, "hidden": [32], "n_states": 2, "context_um": [32]}


def planted_bins(adata, library_id: str, bins):
    """A planted per-bin expression (linear) on a slide's 8 µm grid: rises steeply with the bin's own nuclear pixels.

    Returns ``(values, grid)`` for the bins ``(k, 2)`` (row, col).
    """
    import numpy as np

    from stpredict.io._image import load_slide_image
    from stpredict.pp._dense import BinGrid, DenseFeatures, features_at, slide_bin_side

    image, _ = load_slide_image(adata, library_id)
    grid = BinGrid.for_image(slide_bin_side(adata, library_id, 8.0), image.shape[1], image.shape[0])
    own = features_at(image, grid, DenseFeatures(context_um=()), bins)
    return np.exp(3.0 * own[:, DenseFeatures().names.index("nuclear_mean")]), grid


def planted_sub_spot(adata, gene: str = "ERBB2"):
    """A copy of ``adata`` whose ``layers['log1p']`` of ``gene`` is log1p(the mean of its bins' planted values)."""
    import numpy as np

    adata = adata.copy()
    values = adata.layers["log1p"].copy()
    column = adata.var_names.get_loc(gene)
    for library_id in adata.obs["library_id"].unique():
        where = np.flatnonzero(adata.obs["library_id"] == library_id)
        _, grid = planted_bins(adata, library_id, np.zeros((0, 2), int))
        radius = adata.uns["spatial"][library_id]["scalefactors"]["spot_diameter_fullres"] / 2
        discs = grid.bins_in_discs(adata.obsm["spatial"][where], radius)
        truth, _ = planted_bins(adata, library_id, np.concatenate(discs))
        means = [part.mean() for part in np.split(truth, np.cumsum([len(d) for d in discs])[:-1])]
        values[where, column] = np.log1p(means)
    adata.layers["log1p"] = values
    return adata


#: spot2cell's small settings shared by its tests
SPOT2CELL_SMALL = {"max_epochs": 10, "width": 32, "n_ensemble": 2, "context_um": [32]}


def planted_cell_values(log_area_um2):
    """A planted per-cell expression (linear): rises steeply with the nucleus' size."""
    import numpy as np

    return np.exp(1.2 * (np.asarray(log_area_um2) - 3.6) / 0.7)


def planted_cells(adata, gene: str = "ERBB2"):
    """A copy of ``adata`` whose ``layers['log1p']`` of ``gene`` is log1p(the mean of its nuclei's planted values).

    A spot without nuclei gets 1.0 (the stand-in cell's value).
    """
    import numpy as np

    from stpredict.models._inputs import build_inputs
    from stpredict.models.spot2cell import spot_cell_bags
    from stpredict.pp._cells import CellFeatures
    from stpredict.pp._dense import DenseFeatures

    adata = adata.copy()
    spec = CellFeatures(DenseFeatures(context_um=()))
    inputs, _ = build_inputs(adata, np.empty((adata.n_obs, 0)), needs_images=True)
    bags, mask = spot_cell_bags(inputs, spec)
    truth = planted_cell_values(bags[..., spec.names.index("nucleus_log_area_um2")])
    truth[bags[..., spec.names.index("nucleus_no_nucleus")] == 1] = 1.0
    values = adata.layers["log1p"].copy()
    values[:, adata.var_names.get_loc(gene)] = np.log1p((truth * mask).sum(axis=1) / mask.sum(axis=1))
    adata.layers["log1p"] = values
    return adata
