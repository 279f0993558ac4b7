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
