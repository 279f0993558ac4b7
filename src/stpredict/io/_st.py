"""Reader for the legacy Spatial Transcriptomics format (Ståhl et al. 2016; HER2ST, STUtility's MOB)."""

from __future__ import annotations

import gzip
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
    SOURCE_IMAGE_KEY,
    SPATIAL_KEY,
)
from .._logging import logger, warn
from .._validate import check_unique
from ._image import HIRES_MAX_SIDE, downscaled_copy, image_size, require_spots_inside
from ._slide import mark_slide

# Legacy ST arrays: spots of 100 µm diameter on a 200 µm centre-to-centre square grid.
ST_SPOT_PITCH_UM = 200.0
ST_SPOT_DIAMETER_UM = 100.0

Table = str | PathLike | pd.DataFrame


def _library_id_from(path: Table) -> str:
    name = Path(path).name  # type: ignore[arg-type]
    for suffix in (".gz", ".tsv", ".csv", ".txt"):
        name = name.removesuffix(suffix)
    return name.removesuffix("_selection")


def _read_counts(counts: Table) -> pd.DataFrame:
    """Spots x genes count table; refuses duplicate names and non-numeric values."""
    if isinstance(counts, pd.DataFrame):
        table, where = counts, "the counts DataFrame"
        header = list(table.columns)
    else:
        path = Path(counts)
        where = f"counts file {str(path)!r}"
        if not path.is_file():
            msg = f"Counts file {str(path)!r} does not exist."
            raise FileNotFoundError(msg)
        # pandas silently renames duplicate columns ('A', 'A.1'): read the raw header to catch them.
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as handle:
            first_line = handle.readline().rstrip("\r\n")
        header = first_line.split("\t")[1:]
        if not header:
            separator = next((s for s in (",", ";", " ") if s in first_line), None)
            found = f"it looks {'comma' if separator == ',' else 'otherwise'}-separated" if separator else "one column"
            msg = (
                f"{where} is not tab-separated ({found}; first line starts {first_line[:60]!r}). Counts files are "
                "spots x genes TSV with the spot id first; for another format pass a DataFrame, e.g. "
                "read_st(pd.read_csv(path, index_col=0), ...)."
            )
            raise ValueError(msg)
        table = pd.read_csv(path, sep="\t", index_col=0, keep_default_na=False)  # "NA" is not a count
    table.index = table.index.astype(str)
    check_unique(header, "gene names", where)
    check_unique(table.index, "spot ids", where)
    non_numeric = table.columns[[not pd.api.types.is_numeric_dtype(t) for t in table.dtypes]].tolist()
    if non_numeric:
        column = non_numeric[0]
        bad = pd.to_numeric(table[column], errors="coerce").isna() & table[column].notna()
        example = table.index[bad.to_numpy()][0] if bad.any() else table.index[0]
        msg = (
            f"Non-numeric counts in {where}: gene {str(column)[:60]!r}, spot {str(example)[:60]!r} holds "
            f"{str(table.at[example, column])[:60]!r} ({len(non_numeric)} gene column(s) affected). "
            "The table must be spots x genes with numbers only (first column = spot id)."
        )
        raise ValueError(msg)
    values = table.to_numpy()
    if not np.isfinite(values).all():
        msg = f"{where} contains missing or infinite values."
        raise ValueError(msg)
    if (values < 0).any():
        msg = f"{where} contains negative values; raw counts are expected."
        raise ValueError(msg)
    if not np.allclose(values, np.round(values)):
        warn(f"{where} holds non-integer values: they are kept but are not raw UMI counts.")
    return table


def _read_spots(spots: Table) -> pd.DataFrame:
    if isinstance(spots, pd.DataFrame):
        table, where = spots.copy(), "the spots DataFrame"
    else:
        path = Path(spots)
        where = f"spot file {str(path)!r}"
        if not path.is_file():
            msg = f"Spot file {str(path)!r} does not exist."
            raise FileNotFoundError(msg)
        table = pd.read_csv(path, sep="\t")
    missing = [c for c in ("x", "y", "pixel_x", "pixel_y") if c not in table]
    if missing:
        msg = (
            f"{where} lacks column(s) {missing}; expected the ST spot-selection layout "
            "'x y new_x new_y pixel_x pixel_y selected'."
        )
        raise ValueError(msg)
    if "selected" in table:
        table = table[table["selected"].astype(int) == 1]
    table = table.copy()
    table.index = [f"{int(x)}x{int(y)}" for x, y in zip(table["x"], table["y"], strict=True)]
    check_unique(table.index, "spot positions", where)
    return table


def _pixel_per_array_step(spots: pd.DataFrame) -> float:
    """Pixels between neighbouring array positions, from a least-squares fit of pixel on array coordinates."""
    steps = []
    for array_axis, pixel_axis in (("x", "pixel_x"), ("y", "pixel_y")):
        a = spots[array_axis].to_numpy(float)
        if np.ptp(a) == 0:
            continue
        slope = np.polyfit(a, spots[pixel_axis].to_numpy(float), 1)[0]
        steps.append(abs(slope))
    return float(np.mean(steps)) if steps else float("nan")


def read_st(
    counts: Table | None,
    spots: Table,
    image: str | PathLike | None,
    *,
    library_id: str | None = None,
    patient: str | None = None,
    spot_pitch_um: float = ST_SPOT_PITCH_UM,
    spot_diameter_um: float = ST_SPOT_DIAMETER_UM,
    hires_max_side: int = HIRES_MAX_SIDE,
) -> AnnData:
    """Read one slide in the legacy Spatial Transcriptomics format.

    The format has three files: a counts table (spots x genes, tab-separated, first column the
    spot id ``"{x}x{y}"``), a spot selection table (``x y new_x new_y pixel_x pixel_y selected``,
    as written by the ST spot detector) and the H&E image. Spots are the inner join of the two
    tables (only rows with ``selected == 1`` are kept when that column exists).

    Parameters
    ----------
    counts
        Path to (or DataFrame of) the raw counts. ``None`` reads an image-only slide (no genes),
        which can still be predicted on.
    spots
        Path to (or DataFrame of) the spot selection table.
    image
        Path to the full-resolution H&E image. Only its path and a downscaled copy are stored. ``None``
        reads an expression-only slide (e.g. HER2ST sections whose images are not public): positions and
        scale factors, no image, so nothing that reads pixels applies to it.
    library_id
        Name of the slide; defaults to the counts (or spots) file name without extension.
    patient
        Individual the slide comes from. Cross-validation splits group slides by it, so set it
        whenever several slides come from one patient.
    spot_pitch_um, spot_diameter_um
        Array geometry used to derive microns per pixel (legacy ST: 200 µm pitch, 100 µm spots).
    hires_max_side
        Longer side of the downscaled ``hires`` image kept in ``uns``.

    Returns
    -------
    AnnData in squidpy's layout: raw counts in ``X`` (sparse) and ``layers['counts']``;
    ``obsm['spatial']`` spot centres (x, y) in full-resolution pixels; ``obs['array_row']`` (= ST ``y``),
    ``obs['array_col']`` (= ST ``x``), ``obs['library_id']``, ``obs['patient']``; and
    ``uns['spatial'][library_id]`` with ``images['hires']``, ``scalefactors`` (``tissue_hires_scalef``,
    ``spot_diameter_fullres``, ``microns_per_pixel``) and ``metadata['source_image_path']``.

    Examples
    --------
    >>> import stpredict as st
    >>> files = st.datasets.her2st_crop_files()["C2"]
    >>> adata = st.io.read_st(files["counts"], files["spots"], files["image"], patient="C")
    >>> adata.n_obs, adata.obs["library_id"].iloc[0]
    (72, 'C2')
    >>> sorted(adata.uns["spatial"]["C2"]["scalefactors"])
    ['microns_per_pixel', 'spot_diameter_fullres', 'tissue_hires_scalef']
    """
    if library_id is None:
        library_id = _library_id_from(counts if counts is not None and not isinstance(counts, pd.DataFrame) else spots)
        if isinstance(spots, pd.DataFrame) and (counts is None or isinstance(counts, pd.DataFrame)):
            msg = "Pass `library_id=` when reading from DataFrames."
            raise ValueError(msg)
    library_id = str(library_id)
    spot_table = _read_spots(spots)

    if counts is not None:
        count_table = _read_counts(counts)
        shared = spot_table.index.intersection(count_table.index)
        if len(shared) == 0:
            msg = (
                f"Slide {library_id!r}: no spot id is shared between the counts table "
                f"(e.g. {count_table.index[:3].tolist()}) and the spot table (e.g. {spot_table.index[:3].tolist()}). "
                "Counts must be indexed by '{x}x{y}' array positions matching the spot table's x and y columns."
            )
            raise ValueError(msg)
        dropped_spots = len(spot_table) - len(shared)
        if dropped_spots:
            logger.info("slide %s: %d selected spot(s) have no count row and are dropped", library_id, dropped_spots)
        if dropped_spots > 0.5 * len(spot_table):
            warn(f"slide {library_id!r}: over half of the selected spots have no count row.")
        spot_table = spot_table.loc[shared]
        matrix = sp.csr_matrix(count_table.loc[shared].to_numpy(dtype=np.float32))
        var = pd.DataFrame(index=pd.Index(count_table.columns.astype(str), name=None))
    else:
        matrix = sp.csr_matrix((len(spot_table), 0), dtype=np.float32)
        var = pd.DataFrame(index=pd.Index([], dtype=str))

    px, py = spot_table["pixel_x"].to_numpy(float), spot_table["pixel_y"].to_numpy(float)
    if image is not None:
        width, height = image_size(image)
        require_spots_inside(
            np.column_stack([px, py]),
            width,
            height,
            library_id,
            spot_table.index,
            "lie outside",
            "Check that the spot table's pixel_x/pixel_y refer to this image and its resolution.",
        )

    step_px = _pixel_per_array_step(spot_table)
    microns_per_pixel = spot_pitch_um / step_px if np.isfinite(step_px) else float("nan")
    images, metadata = {}, {}
    if image is not None:  # an expression-only slide (no H&E) keeps positions and scale factors only
        hires, hires_scale = downscaled_copy(image, hires_max_side)
        images, metadata = {"hires": hires}, {SOURCE_IMAGE_KEY: str(Path(image).resolve())}
    else:
        hires_scale = 1.0

    obs = pd.DataFrame(index=[f"{library_id}_{s}" for s in spot_table.index])
    obs["spot_id"] = spot_table.index.to_numpy()
    obs[ARRAY_ROW] = spot_table["y"].to_numpy(int)
    obs[ARRAY_COL] = spot_table["x"].to_numpy(int)
    adata = AnnData(X=matrix, obs=obs, var=var)
    mark_slide(adata, library_id, patient, counts=matrix)
    adata.obsm[SPATIAL_KEY] = np.column_stack([px, py])
    adata.uns[SPATIAL_KEY] = {
        library_id: {
            "images": images,
            "scalefactors": {
                "tissue_hires_scalef": float(hires_scale),
                "spot_diameter_fullres": float(spot_diameter_um / microns_per_pixel),
                MICRONS_PER_PIXEL: float(microns_per_pixel),
            },
            "metadata": {
                **metadata,
                GRID_KEY: "square",
                "technology": "Spatial Transcriptomics (legacy, 100 um spots)",
            },
        }
    }
    logger.info("read slide %s: %d spots x %d genes", library_id, adata.n_obs, adata.n_vars)
    return adata
