"""Reader for HEST-1k samples (Jaume et al. 2024): expression, pyramidal WSI and metadata of one sample."""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._constants import (
    ARRAY_COL,
    ARRAY_ROW,
    GRID_KEY,
    MICRONS_PER_PIXEL,
    SEGMENTATION_KEY,
    SOURCE_IMAGE_KEY,
    SPATIAL_KEY,
)
from .._files import read_h5ad
from .._logging import logger
from ._image import HIRES_MAX_SIDE, require_spots_inside
from ._slide import make_genes_unique, mark_slide
from ._stored_patches import STORED_PATCHES_KEY, patch_file_record
from ._wsi import WholeSlide

#: spot diameter (µm) by technology, when the metadata does not give it
SPOT_DIAMETER_UM = {"visium": 55.0, "spatial transcriptomics": 100.0, "st": 100.0}


def _hest_files(root: Path, sample_id: str, use_patches: bool | None) -> dict[str, Path | None]:
    """The sample's files; the WSI may be missing when its stored patches are there and used."""
    files: dict[str, Path | None] = {
        "st": root / "st" / f"{sample_id}.h5ad",
        "wsi": root / "wsis" / f"{sample_id}.tif",
        "metadata": root / "metadata" / f"{sample_id}.json",
        "patches": root / "patches" / f"{sample_id}.h5",
    }
    if use_patches is True and not files["patches"].is_file():
        msg = f"HEST sample {sample_id!r}: patches=True, but {str(files['patches'])!r} is not there."
        raise FileNotFoundError(msg)
    if use_patches is False or not files["patches"].is_file():
        files["patches"] = None
    required = ["st", "metadata"] + ([] if files["patches"] is not None else ["wsi"])
    missing = [f"{k}: {files[k]}" for k in required if not files[k].is_file()]
    if missing:
        msg = (
            f"HEST sample {sample_id!r} is incomplete under {str(root)!r} (missing {'; '.join(missing)}). A HEST-1k "
            "download has st/<id>.h5ad, metadata/<id>.json and wsis/<id>.tif (or patches/<id>.h5 instead of the WSI); "
            "fetch a sample with huggingface_hub.snapshot_download('MahmoodLab/hest', repo_type='dataset', "
            "allow_patterns=['*<id>*'])."
        )
        raise FileNotFoundError(msg)
    if not files["wsi"].is_file():
        files["wsi"] = None
    return files


def _pixel_size(meta: dict, slide: WholeSlide | None, sample_id: str) -> float:
    """HEST's estimated pixel size (checked against the spot grid) before the file's embedded one."""
    for key in ("pixel_size_um_estimated", "pixel_size_um_embedded"):
        value = meta.get(key)
        if value not in (None, "") and np.isfinite(float(value)) and float(value) > 0:
            return float(value)
    if slide is not None and slide.mpp:
        return slide.mpp
    msg = f"HEST sample {sample_id!r}: neither its metadata nor its WSI records the pixel size."
    raise ValueError(msg)


def _cellvit_file(root: Path, sample_id: str) -> Path | None:
    """HEST's CellViT nuclei of a sample (GeoParquet, else zipped or plain GeoJSON), if downloaded."""
    for suffix in (".parquet", ".geojson.zip", ".geojson"):
        path = root / "cellvit_seg" / f"{sample_id}_cellvit_seg{suffix}"
        if path.is_file():
            return path.resolve()
    return None


def patch_mosaic(path: Path, patch_to_wsi: float, max_side: int) -> tuple[np.ndarray, float]:
    """An overview of a slide drawn from its stored patches (white where none), and its scale to WSI pixels.

    ``patch_to_wsi``: WSI pixels per stored-patch pixel; patch corners (``coords``) are in WSI pixels.
    """
    import h5py
    from PIL import Image

    with h5py.File(path, "r") as handle:
        corners = np.asarray(handle["coords"][:], dtype=float).reshape(-1, 2)
        extent = handle["img"].shape[1] * patch_to_wsi
        width, height = corners.max(axis=0) + extent
        scale = min(1.0, max_side / max(width, height))
        mosaic = np.full((int(np.ceil(height * scale)), int(np.ceil(width * scale)), 3), 255, dtype=np.uint8)
        side = max(1, int(round(extent * scale)))
        for start in range(0, len(corners), 256):
            images = np.asarray(handle["img"][start : start + 256])[..., :3]
            for (x, y), image in zip(corners[start : start + 256], images, strict=True):
                x0, y0 = max(0, int(round(x * scale))), max(0, int(round(y * scale)))
                tile = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BOX))
                tile = tile[: mosaic.shape[0] - y0, : mosaic.shape[1] - x0]
                mosaic[y0 : y0 + tile.shape[0], x0 : x0 + tile.shape[1]] = tile
    return mosaic, scale


def read_hest(
    root: str | PathLike,
    sample_id: str,
    *,
    library_id: str | None = None,
    patient: str | None = None,
    backend: str = "auto",
    hires_max_side: int = HIRES_MAX_SIDE,
    patches: bool | None = None,
    patch_mpp: float = 0.5,
) -> AnnData:
    """Read one HEST-1k sample into stpredict's layout (counts, spots on the WSI, lazy image reads).

    HEST-1k stores each sample as ``st/<id>.h5ad`` (counts; spot centres in WSI pixels in
    ``obsm['spatial']``), ``wsis/<id>.tif`` (pyramidal) and ``metadata/<id>.json`` (pixel size, spot diameter,
    technology, patient). The WSI is opened lazily: only an overview is decoded here.

    Parameters
    ----------
    root
        Directory of the HEST download (with ``st/``, ``wsis/``, ``metadata/``).
    sample_id
        Sample id, e.g. ``'TENX95'``.
    library_id, patient
        Slide and patient names (default: the sample id and the metadata's ``patient``).
    backend
        WSI backend (``'auto'``, ``'openslide'``, ``'tiffslide'``).
    hires_max_side
        Longer side of the stored overview.
    patches
        Use HEST's own patches (``patches/<id>.h5``, one per spot): ``None`` (default) when the file is there,
        ``True`` to require it, ``False`` to ignore it. Image features are then read from them whenever the
        request fits inside a stored patch without upsampling (e.g. ``size=224, unit='px', target_mpp=0.5``,
        or ``size=100, unit='um'`` on a 0.5 µm/px scan), else cut from the WSI. With stored patches the WSI may
        be missing (``uns`` then holds a mosaic of the patches as its overview).
    patch_mpp
        Pixel size of the stored patches (HEST-1k: 0.5 µm/px).

    HEST's CellViT nuclei (``cellvit_seg/<id>_cellvit_seg.parquet``, or ``.geojson[.zip]``), when downloaded, are
    recorded too: ``st.pp.image_features(adata, method='nuclei', segmentation='cellvit')`` reads them.

    Returns
    -------
    AnnData with raw counts in ``X`` and ``layers['counts']``, ``obsm['spatial']``, ``obs['array_row']`` /
    ``obs['array_col']`` when HEST has them, and ``uns['spatial'][library_id]`` as for :func:`read_wsi`.

    Examples
    --------
    A sample in HEST's layout, made here from a bundled section:

    >>> import json, pathlib, numpy as np, stpredict as st
    >>> from PIL import Image
    >>> crop = st.datasets.her2st_crop()
    >>> c3 = crop[crop.obs["library_id"] == "C3"].copy()
    >>> root = pathlib.Path("hest")
    >>> for folder in ("st", "wsis", "metadata"):
    ...     (root / folder).mkdir(parents=True, exist_ok=True)
    >>> table = c3.copy()
    >>> del table.uns["spatial"]
    >>> table.write_h5ad(root / "st" / "SPA_C3.h5ad")
    >>> image = np.asarray(Image.open(st.io.source_image_path(c3, "C3")).convert("RGB"))
    >>> _ = st.io.write_pyramidal_tiff(image, root / "wsis" / "SPA_C3.tif", mpp=0.685)
    >>> meta = {"pixel_size_um_estimated": 0.685, "spot_diameter": 100, "st_technology": "Spatial Transcriptomics"}
    >>> _ = (root / "metadata" / "SPA_C3.json").write_text(json.dumps(meta))
    >>> st.io.read_hest(root, "SPA_C3").shape
    (71, 13279)
    """
    root = Path(root)
    files = _hest_files(root, sample_id, patches)
    try:
        meta = json.loads(files["metadata"].read_text())
    except json.JSONDecodeError as err:
        msg = f"Metadata file {str(files['metadata'])!r} is not valid JSON ({err}); download the sample again."
        raise ValueError(msg) from err
    library_id = library_id or sample_id
    patient = patient if patient is not None else meta.get("patient")
    table = read_h5ad(files["st"])
    if SPATIAL_KEY not in table.obsm:
        msg = f"{files['st']} has no obsm['spatial'] (spot centres in WSI pixels)."
        raise KeyError(msg)
    centres = np.asarray(table.obsm[SPATIAL_KEY], dtype=float)[:, :2]
    if files["wsi"] is not None:
        with WholeSlide(files["wsi"], backend=backend) as slide:
            mpp = _pixel_size(meta, slide, sample_id)
            hires, hires_scale = slide.thumbnail(hires_max_side)
            height, width = slide.shape[:2]
            backend_used = slide.backend
        require_spots_inside(
            centres, width, height, library_id, table.obs_names, "lie outside", "Is obsm['spatial'] in WSI pixels?"
        )
    else:  # patches only: the overview is a mosaic of the stored patches
        mpp, backend_used = _pixel_size(meta, None, sample_id), None
        hires, hires_scale = patch_mosaic(files["patches"], patch_mpp / mpp, hires_max_side)
    technology = str(meta.get("st_technology", "")).strip()
    diameter_um = meta.get("spot_diameter") or SPOT_DIAMETER_UM.get(technology.lower(), 55.0)
    counts = sp.csr_matrix(table.X, dtype=np.float32)
    obs = pd.DataFrame(index=[f"{library_id}_{name}" for name in table.obs_names])
    obs["spot_id"] = table.obs_names.to_numpy()
    for key in (ARRAY_ROW, ARRAY_COL):
        if key in table.obs:
            obs[key] = table.obs[key].to_numpy(int)
    adata = AnnData(X=counts, obs=obs, var=pd.DataFrame(index=table.var_names.astype(str)))
    make_genes_unique(adata, library_id)
    mark_slide(adata, library_id, patient, counts=counts)
    adata.obsm[SPATIAL_KEY] = centres
    adata.uns[SPATIAL_KEY] = {
        library_id: {
            "images": {"hires": hires},
            "scalefactors": {
                "tissue_hires_scalef": float(hires_scale),
                "spot_diameter_fullres": float(diameter_um) / mpp,
                MICRONS_PER_PIXEL: mpp,
            },
            "metadata": {
                SOURCE_IMAGE_KEY: str(files["wsi"].resolve()) if files["wsi"] is not None else None,
                GRID_KEY: "square" if technology.lower() in ("spatial transcriptomics", "st") else "hex",
                "technology": technology or "unknown",
                "wsi_backend": backend_used,
                "hest_sample": sample_id,
            },
        }
    }
    if files["patches"] is not None:
        record = patch_file_record(files["patches"], patch_mpp, barcode_key="spot_id")
        adata.uns[SPATIAL_KEY][library_id]["metadata"][STORED_PATCHES_KEY] = record
    segmentation = _cellvit_file(root, sample_id)
    if segmentation is not None:
        adata.uns[SPATIAL_KEY][library_id]["metadata"][SEGMENTATION_KEY] = {"cellvit": {"path": str(segmentation)}}
    logger.info("read_hest %s: %d spots x %d genes at %.3f µm/px", sample_id, adata.n_obs, adata.n_vars, mpp)
    return adata
