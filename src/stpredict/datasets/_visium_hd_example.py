"""A small Visium HD run in Space Ranger's file formats, synthesised from the bundled H&E crop (offline).

For trying the Visium HD path without downloading a run (real ones are tens of GB): the layout, formats and
geometry are Space Ranger 3's, the expression is made up. Layout::

    outs/binned_outputs/square_002um/filtered_feature_bc_matrix.h5   (10x HDF5, CSC genes x barcodes)
    outs/binned_outputs/square_002um/spatial/tissue_positions.parquet
    outs/binned_outputs/square_002um/spatial/scalefactors_json.json  (bin_size_um, microns_per_pixel, ...)
    outs/binned_outputs/square_002um/spatial/tissue_hires_image.png
    ... the same for square_008um and square_016um (their counts: sums of 4x4 and 8x8 blocks of 2 µm bins)
    image.tif                                                          (the full-resolution H&E, pyramidal)

Expression follows the image: gene ``DARK`` rises with the haematoxylin darkness of the 8 µm block under
a bin and ``PALE`` falls with it, ``FLAT`` and 20 background genes ``BG*`` do not depend on it (so that
normalising to a total leaves ``FLAT`` flat); ``DUP`` appears twice (as in 10x references). The raw matrix
holds every bin, the filtered one the bins under tissue (all but one corner bin).
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from PIL import Image

from .. import io as st_io
from ._bundled import her2st_crop, her2st_crop_files

GENES = ["DARK", "PALE", "FLAT", "DUP", "DUP"] + [f"BG{i}" for i in range(20)]
BIN_SIZES = (2, 8, 16)


def write_10x_h5(path: Path, counts: sp.csr_matrix, barcodes: list[str], genes: list[str]) -> None:
    """A 10x Genomics feature-barcode matrix HDF5 (v3 schema: ``matrix/`` CSC of genes x barcodes)."""
    csc = sp.csc_matrix(counts.T.astype(np.int32))  # genes x barcodes, compressed by barcode
    with h5py.File(path, "w") as f:
        group = f.create_group("matrix")
        group.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        group.create_dataset("data", data=csc.data)
        group.create_dataset("indices", data=csc.indices.astype(np.int64))
        group.create_dataset("indptr", data=csc.indptr.astype(np.int64))
        group.create_dataset("shape", data=np.array(csc.shape, dtype=np.int32))
        features = group.create_group("features")
        features.create_dataset("id", data=np.array([f"ENSG{i:011d}" for i in range(len(genes))], dtype="S"))
        features.create_dataset("name", data=np.array(genes, dtype="S"))
        features.create_dataset("feature_type", data=np.array(["Gene Expression"] * len(genes), dtype="S"))
        features.create_dataset("genome", data=np.array(["GRCh38"] * len(genes), dtype="S"))
        features.create_dataset("_all_tag_keys", data=np.array([b"genome"]))


def _darkness(rgb: np.ndarray, mpp: float, top: float, left: float, n: int, size_um: float) -> np.ndarray:
    """Mean darkness (1 - grey) of the ``n x n`` blocks of ``size_um`` starting at pixel (top, left)."""
    grey = rgb.mean(axis=2) / 255.0
    side = size_um / mpp
    out = np.zeros((n, n))
    for r in range(n):
        for c in range(n):
            y0, x0 = int(top + r * side), int(left + c * side)
            out[r, c] = 1 - grey[y0 : int(y0 + side) + 1, x0 : int(x0 + side) + 1].mean()
    return out


def write_visium_hd(
    root: Path, *, top_um: float = 500.0, left_um: float = 500.0, extent_um: int = 320, seed: int = 0
) -> Path:
    """Write ``root/outs`` (bins over ``extent_um`` µm square from (top_um, left_um)) and ``root/image.tif``.

    :func:`visium_hd_example` is the public face; tests call this with other regions and seeds.
    """
    files = her2st_crop_files()["C4"]
    mpp = float(her2st_crop().uns["spatial"]["C4"]["scalefactors"]["microns_per_pixel"])
    rgb = np.asarray(Image.open(files["image"]).convert("RGB"))
    root.mkdir(parents=True, exist_ok=True)
    st_io.write_pyramidal_tiff(rgb, root / "image.tif", mpp=mpp)
    top, left = top_um / mpp, left_um / mpp
    n8 = extent_um // 8
    darkness = _darkness(rgb, mpp, top, left, n8, 8.0)
    z = (darkness - darkness.mean()) / darkness.std()
    rng = np.random.default_rng(seed)
    n2 = extent_um // 2
    rows, cols = np.divmod(np.arange(n2 * n2), n2)
    z2 = z[rows // 4, cols // 4]
    rates = np.column_stack([np.exp(0.8 * z2), np.exp(-0.8 * z2), np.ones_like(z2), 0.5 * np.ones_like(z2)])
    rates = np.column_stack([rates, rates[:, 3], np.ones((len(z2), 20))]) * 0.6
    counts2 = sp.csr_matrix(rng.poisson(rates).astype(np.float32))
    hires_scale = 2000 / max(rgb.shape[:2])
    hires = Image.fromarray(rgb).resize((round(rgb.shape[1] * hires_scale), round(rgb.shape[0] * hires_scale)))
    for size in BIN_SIZES:
        factor = size // 2
        n = n2 // factor
        block = (rows // factor) * n + cols // factor
        membership = sp.csr_matrix((np.ones(len(block)), (block, np.arange(len(block)))), shape=(n * n, len(block)))
        counts = membership @ counts2
        r, c = np.divmod(np.arange(n * n), n)
        barcodes = [f"s_{size:03d}um_{a:05d}_{b:05d}-1" for a, b in zip(r, c, strict=True)]
        in_tissue = np.ones(n * n, dtype=int)
        in_tissue[(r == 0) & (c == 0)] = 0  # a corner bin off tissue
        folder = root / "outs" / "binned_outputs" / f"square_{size:03d}um"
        (folder / "spatial").mkdir(parents=True, exist_ok=True)
        kept = in_tissue == 1
        write_10x_h5(folder / "raw_feature_bc_matrix.h5", sp.csr_matrix(counts), barcodes, GENES)
        write_10x_h5(
            folder / "filtered_feature_bc_matrix.h5",
            sp.csr_matrix(counts)[kept],
            [b for b, k in zip(barcodes, kept, strict=True) if k],
            GENES,
        )
        positions = pd.DataFrame(
            {
                "barcode": barcodes,
                "in_tissue": in_tissue,
                "array_row": r,
                "array_col": c,
                "pxl_row_in_fullres": top + (r + 0.5) * size / mpp,
                "pxl_col_in_fullres": left + (c + 0.5) * size / mpp,
            }
        )
        positions.to_parquet(folder / "spatial" / "tissue_positions.parquet")
        scalefactors = {
            "spot_diameter_fullres": size / mpp,
            "bin_size_um": float(size),
            "microns_per_pixel": mpp,
            "regist_target_img_scalef": hires_scale,
            "tissue_lowres_scalef": hires_scale * 0.3,
            "fiducial_diameter_fullres": 10.0,
            "tissue_hires_scalef": hires_scale,
        }
        (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(scalefactors))
        hires.save(folder / "spatial" / "tissue_hires_image.png")
    return root / "outs"


def visium_hd_example(path: str | PathLike, *, run: Literal["a", "b"] = "a", extent_um: int = 320) -> Path:
    """Write a small synthetic Visium HD run in Space Ranger's formats and return its ``outs`` folder.

    Two runs cover different parts of the bundled HER2ST C4 H&E crop (so different tissue lies under their
    bins): ``'a'`` and ``'b'`` (train on one, predict the other). Each has 2, 8 and 16 µm bins over a
    320 µm square, a pyramidal full-resolution ``image.tif`` beside ``outs``, and made-up expression:
    ``DARK`` rises and ``PALE`` falls with the darkness of the tissue under a bin, ``FLAT`` and ``BG*`` do not
    depend on it, ``DUP`` occurs twice. For trying :func:`stpredict.io.read_visium_hd` offline; real runs come
    from Space Ranger.

    Parameters
    ----------
    path
        Folder to write into (``path/outs`` and ``path/image.tif``).
    run
        Which of the two runs.
    extent_um
        Side of the run's square in µm (at most 640: the two runs stay apart on the crop). Larger runs hold
        more Visium-like pseudo-spots (``st.pp.pseudo_spots``) to train on.

    Examples
    --------
    >>> import tempfile
    >>> import stpredict as st
    >>> outs = st.datasets.visium_hd_example(tempfile.mkdtemp())
    >>> sorted(p.name for p in (outs / "binned_outputs").iterdir())
    ['square_002um', 'square_008um', 'square_016um']
    """
    regions = {
        "a": {"top_um": 300.0, "left_um": 200.0, "seed": 0},
        "b": {"top_um": 900.0, "left_um": 1100.0, "seed": 1},
    }
    if run not in regions:
        msg = f"run must be 'a' or 'b', got {run!r}."
        raise ValueError(msg)
    if not (16 <= int(extent_um) <= 640 and int(extent_um) % 16 == 0):
        msg = f"extent_um must be a multiple of 16 between 16 and 640, got {extent_um!r}."
        raise ValueError(msg)
    return write_visium_hd(Path(path), **regions[run], extent_um=int(extent_um))
