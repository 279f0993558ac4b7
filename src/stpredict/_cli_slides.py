"""How the command line reads a slide: the ``st.io`` reader its format needs, chosen before any work runs.

Formats: ``.h5ad``; Space Ranger ``outs`` folders (Visium, Visium HD); Xenium and CosMx folders; SpatialData
``.zarr`` stores; whole-slide images; and legacy Spatial Transcriptomics (``st.io.read_st``: a counts table, a
spot table and the H&E), given as the counts table, as a folder holding the three files, as the H&E image
beside its spot table (image only), or as a data set folder with ``counts/``, ``spots/`` and ``images/``
(HER2ST's layout: every section in it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE_SUFFIXES = (".tsv", ".tsv.gz", ".csv", ".csv.gz", ".txt", ".txt.gz")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_SPOT_TABLE = re.compile(r"(selection|spots?)", re.IGNORECASE)


class UsageError(Exception):
    """A command line or configuration problem: reported without a traceback, exit status 2."""


@dataclass(frozen=True)
class Slide:
    """One slide to process: its path (the name of its outputs) and how to read it."""

    path: Path
    name: str
    reader: str  # 'h5ad', 'visium', 'visium_hd', 'xenium', 'cosmx', 'spatialdata', 'wsi', 'st'
    files: tuple[Path | None, Path | None, Path | None] = (None, None, None)  # legacy ST: counts, spots, image


def _is_table(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(TABLE_SUFFIXES)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", *TABLE_SUFFIXES, *IMAGE_SUFFIXES):
        name = name.removesuffix(suffix)
    return name


def _section_file(folders: list[Path], section: str, accept: Callable[[Path], bool]) -> Path | None:
    """The file of ``section`` in ``folders``: its name is the section, or starts with it and ``_`` or ``.``."""
    for folder in folders:
        if not folder.is_dir():
            continue
        for candidate in sorted(folder.iterdir()):
            stem = _stem(candidate)
            if accept(candidate) and (stem == section or candidate.name.startswith((f"{section}_", f"{section}."))):
                return candidate
    return None


def _spot_table(folders: list[Path], section: str) -> Path | None:
    return _section_file(
        folders, section, lambda p: _is_table(p) and bool(_SPOT_TABLE.search(_stem(p)[len(section) :]))
    )


def legacy_st(counts: Path) -> Slide:
    """A legacy-ST slide from its counts table: spot table and image beside it or in ``../spots``, ``../images``."""
    section = _stem(counts)
    up = counts.parent.parent
    spots = _spot_table([counts.parent, up / "spots"], section)
    if spots is None:
        raise UsageError(
            f"{str(counts)!r} looks like a legacy-ST counts table, but no spot table '{section}_selection.tsv' (or "
            f"'{section}*spots*') lies beside it or in {str(up / 'spots')!r}: st.io.read_st needs both."
        )
    image = _section_file([counts.parent, up / "images"], section, _is_image)
    return Slide(counts, section, "st", (counts, spots, image))


def _legacy_image(image: Path) -> Slide | None:
    """An H&E image with its section's spot table beside it (or in ``../spots``): an image-only legacy-ST slide."""
    folders = [image.parent, image.parent.parent / "spots"]
    for section in sorted({_stem(image), _stem(image).split("_")[0]}, key=len, reverse=True):
        spots = _spot_table(folders, section)
        if spots is not None:
            return Slide(image, section, "st", (None, spots, image))
    return None


def _legacy_folder(folder: Path) -> list[Slide]:
    """A folder in the legacy-ST layouts: ``counts/`` + ``spots/`` (+ ``images/``), or one slide's three files."""
    if (folder / "counts").is_dir() and (folder / "spots").is_dir():
        return [legacy_st(p) for p in sorted((folder / "counts").iterdir()) if _is_table(p)]
    tables = [p for p in sorted(folder.iterdir()) if _is_table(p)]
    counts = [p for p in tables if not _SPOT_TABLE.search(_stem(p))]
    if len(counts) == 1 and len(tables) > 1:
        return [legacy_st(counts[0])]
    return []


def slide_name(path: Path) -> str:
    """The output name of a slide: its file name without suffix (a Space Ranger ``outs`` folder: its run)."""
    if path.name == "outs":
        return path.parent.name
    return path.name.removesuffix(".zarr").split(".")[0] if path.suffix else path.name


def slides_at(path: Path) -> list[Slide]:
    """The slides at ``path`` and how each is read; a :class:`UsageError` when no reader fits."""
    from .io import is_wsi

    name = slide_name(path)
    if path.suffix == ".h5ad":
        return [Slide(path, name, "h5ad")]
    if path.suffix == ".zarr":
        return [Slide(path, name, "spatialdata")]
    if path.is_dir():
        if (path / "outs").is_dir():  # a Space Ranger run folder: its outputs
            return [Slide(p.path, name, p.reader, p.files) for p in slides_at(path / "outs")]
        if (path / "transcripts.parquet").is_file():
            return [Slide(path, name, "xenium")]
        if any(path.glob("*tx_file.csv*")):
            return [Slide(path, name, "cosmx")]
        if (path / "binned_outputs").is_dir():
            return [Slide(path, name, "visium_hd")]
        if (path / "spatial").is_dir() or any(path.glob("*.h5")):
            return [Slide(path, name, "visium")]
        legacy = _legacy_folder(path)
        if legacy:
            return legacy
        raise UsageError(
            f"Cannot tell how to read the folder {str(path)!r}: it is not a Space Ranger 'outs' folder (no "
            "filtered_feature_bc_matrix.h5 or spatial/), a Xenium or CosMx folder, nor a legacy-ST folder (a counts "
            "table, a '*_selection.tsv' spot table and the H&E; or counts/, spots/, images/ folders)."
        )
    if _is_table(path):
        return [legacy_st(path)]
    if is_wsi(path):
        return [Slide(path, name, "wsi")]
    if _is_image(path):
        legacy = _legacy_image(path)
        if legacy is not None:
            return [legacy]
        raise UsageError(
            f"{str(path)!r} is a plain image without spot positions: give it with its spot table (a legacy-ST "
            f"'{_stem(path)}_selection.tsv' beside it), or convert it for whole-slide reading with "
            "st.io.write_pyramidal_tiff(image, 'slide.tif', mpp=...) (virtual spots are then laid on the tissue)."
        )
    raise UsageError(
        f"Cannot tell how to read {str(path)!r}: pass .h5ad files, Space Ranger 'outs' folders, Xenium or CosMx "
        "folders, SpatialData .zarr stores, whole-slide images, or legacy-ST counts tables / folders."
    )


def read(slide: Slide, options: dict[str, Any]):
    """The slide as AnnData, read by its format's reader with the ``[read]`` keys that reader takes."""
    import anndata as ad

    import stpredict as st

    name = {"library_id": options.get("library_id", slide.name)}
    if slide.reader == "h5ad":
        adata = ad.read_h5ad(slide.path)
        if options.get("patient") is not None:  # the one [read] key a saved AnnData can still take
            adata.obs["patient"] = str(options["patient"])
        return adata
    if slide.reader == "st":
        counts, spots, image = slide.files
        return st.io.read_st(counts, spots, image, **_known(st.io.read_st, options), **name)
    reader = getattr(st.io, READERS[slide.reader])
    return reader(slide.path, **_known(reader, options), **name)


#: the ``st.io`` reader of each format read from a path (legacy ST is read from its three files)
READERS = {
    "visium": "read_visium",
    "visium_hd": "read_visium_hd",
    "xenium": "read_xenium",
    "cosmx": "read_cosmx",
    "spatialdata": "read_spatialdata",
    "wsi": "read_wsi",
}


def read_keys() -> set[str]:
    """Every key a ``[read]`` table may hold: the keyword parameters of the readers (and ``patient``)."""
    import inspect

    import stpredict as st

    readers = [getattr(st.io, name) for name in READERS.values()] + [st.io.read_st]
    keys = {"patient", "library_id"}
    for reader in readers:
        parameters = list(inspect.signature(reader).parameters.values())
        keys |= {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return keys


def _known(function: Callable, options: dict[str, Any]) -> dict[str, Any]:
    """The ``[read]`` options ``function`` accepts (each reader takes its own subset)."""
    import inspect

    accepted = set(inspect.signature(function).parameters) - {"library_id"}
    return {k: v for k, v in options.items() if k in accepted}
