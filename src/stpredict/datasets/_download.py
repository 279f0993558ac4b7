"""Public data sets the field benchmarks on, fetched from their original URLs with caching and checksums.

Every function also accepts ``path=`` pointing at local copies, which is how they are used offline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from importlib.resources import files
from os import PathLike
from pathlib import Path

from anndata import AnnData

from .._logging import logger
from ..io import concat, read_st

HER2ST_URL = "https://raw.githubusercontent.com/almaan/her2st/85df7411b987a7dec3feff9718b869a7a82091ec/"
STUTILITY_URL = "https://raw.githubusercontent.com/jbergenstrahle/STUtility/master/"
VISIUM_BC_URL = "https://cf.10xgenomics.com/samples/spatial-exp/1.1.0/V1_Breast_Cancer_Block_A_Section_1/"
VISIUM_BC_FILES = {
    # 10x publishes no checksums for these files: pooch then only caches them.
    "V1_Breast_Cancer_Block_A_Section_1_filtered_feature_bc_matrix.h5": None,
    "V1_Breast_Cancer_Block_A_Section_1_spatial.tar.gz": None,
    "V1_Breast_Cancer_Block_A_Section_1_image.tif": None,
}
HER2ST_IMAGED_SECTIONS = ("C2", "C3", "C4", "C5", "C6")
MOB_INDIVIDUAL = {"MOB1": "1", "MOB2": "1", "MOB3": "2", "MOB4": "2"}  # STUtility metaData.csv


def default_cache_dir() -> Path:
    """Where downloads are cached: ``$STPREDICT_DATA`` or the OS cache folder (pooch's choice).

    Examples
    --------
    >>> import stpredict as st
    >>> st.datasets.default_cache_dir().name  # doctest: +SKIP
    'stpredict'
    """
    import pooch

    return Path(os.environ.get("STPREDICT_DATA") or pooch.os_cache("stpredict"))


def _registry() -> dict[str, tuple[str, str]]:
    """Local name -> (remote path, sha256)."""
    text = files("stpredict.datasets").joinpath("_registry.txt").read_text()
    entries = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            local, remote, digest = line.split()
            entries[local] = (remote, digest)
    return entries


def fetch(
    local_name: str,
    url: str,
    known_hash: str | None,
    *,
    cache_dir: str | PathLike | None = None,
    downloader: Callable | None = None,
) -> Path:
    """Download one file into the cache (once) and verify its checksum.

    Parameters
    ----------
    local_name
        Path of the file inside the cache folder.
    url
        Where to download it from.
    known_hash
        ``sha256`` of the file (``None`` skips the check, for sources that publish none).
    cache_dir
        Cache folder; see :func:`default_cache_dir`.
    downloader
        A pooch downloader (``callable(url, output_file, pooch)``); the default uses HTTP.

    Returns
    -------
    Path of the cached file.

    Examples
    --------
    >>> import stpredict as st
    >>> path = st.datasets.fetch("her2st/C2.tsv.gz", st.datasets._download.HER2ST_URL + "data/ST-cnts/C2.tsv.gz",
    ...                          "c1c59ea6cffae36b9ecb561b8e2a97e3aa5f4085f748e991a0e330ed9d09773d")  # doctest: +SKIP
    """
    import pooch

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / local_name
    known = f"sha256:{known_hash}" if known_hash else None
    try:
        path = pooch.retrieve(
            url, known_hash=known, fname=target.name, path=target.parent, downloader=downloader, progressbar=False
        )
    except ValueError:  # pooch's checksum mismatch: say which file and what to do
        msg = (
            f"Checksum mismatch for {local_name} downloaded from {url}. The remote file changed or the download "
            f"was corrupted; delete {target} and retry, or pass `path=` to a verified local copy."
        )
        raise ValueError(msg) from None
    except Exception as err:
        msg = (
            f"Could not download {url} ({type(err).__name__}: {err}). If this machine is offline, download the "
            f"file elsewhere and pass `path=` to the folder holding it (or place it at {target})."
        )
        raise ConnectionError(msg) from err
    return Path(path)


def _find(root: Path, patterns: Sequence[str], what: str) -> Path:
    for pattern in patterns:
        hits = sorted(root.rglob(pattern))
        if hits:
            return hits[0]
    msg = f"No {what} under {str(root)!r} (looked for {list(patterns)})."
    raise FileNotFoundError(msg)


def _her2st_section_files(
    section: str, path: Path | None, cache_dir: str | PathLike | None, downloader: Callable | None
) -> dict[str, Path]:
    if path is not None:
        return {
            "counts": _find(path, [f"{section}.tsv.gz", f"{section}.tsv"], f"counts of section {section}"),
            "spots": _find(path, [f"{section}_selection.tsv"], f"spot table of section {section}"),
            "image": _find(path, [f"{section}_*.jpg", f"{section}.jpg", f"{section}/*.jpg"], f"image of {section}"),
        }
    registry = _registry()
    names = {
        "counts": f"her2st/{section}.tsv.gz",
        "spots": f"her2st/{section}_selection.tsv",
        "image": next(k for k in registry if k.startswith(f"her2st/{section}_") and k.endswith(".jpg")),
    }
    return {
        kind: fetch(name, HER2ST_URL + registry[name][0], registry[name][1], cache_dir=cache_dir, downloader=downloader)
        for kind, name in names.items()
    }


def her2st(
    sections: Sequence[str] = HER2ST_IMAGED_SECTIONS,
    *,
    path: str | PathLike | None = None,
    cache_dir: str | PathLike | None = None,
    downloader: Callable | None = None,
) -> AnnData:
    """HER2-positive breast cancer, legacy Spatial Transcriptomics (Andersson et al. 2021, Nat. Commun.).

    The "HER2ST" / "BC1" data set of TRIPLEX, MERGE and SpaHGC. Sections are named by patient letter and
    replicate (``'C2'``); ``obs['patient']`` is the letter. Only sections whose H&E image is public
    with a known checksum can be downloaded (patient C: C2-C6); other sections can be read from ``path``.

    Parameters
    ----------
    sections
        Sections to read.
    path
        Folder with local copies (``{section}.tsv.gz``, ``{section}_selection.tsv``, ``{section}_*.jpg``
        anywhere below it). When ``None``, files are downloaded from github almaan/her2st @85df741.
    cache_dir
        Download cache (default: :func:`default_cache_dir`).
    downloader
        Custom pooch downloader (e.g. with authentication or a proxy).

    Returns
    -------
    All sections in one AnnData (genes shared by all sections).

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st(["C2", "C3"], path="../shared/data/her2st")  # doctest: +SKIP
    """
    sections = [sections] if isinstance(sections, str) else list(sections)
    root = Path(path) if path is not None else None
    if root is None:
        unknown = [s for s in sections if s not in HER2ST_IMAGED_SECTIONS]
        if unknown:
            msg = f"No published image with a checksum for section(s) {unknown}; pass `path=` to local copies."
            raise ValueError(msg)
    slides = []
    for section in sections:
        f = _her2st_section_files(section, root, cache_dir, downloader)
        slides.append(read_st(f["counts"], f["spots"], f["image"], library_id=section, patient=section[0]))
    logger.info("her2st: read %d section(s)", len(slides))
    return concat(slides)


def mob(
    sections: Sequence[str] = tuple(MOB_INDIVIDUAL),
    *,
    path: str | PathLike | None = None,
    cache_dir: str | PathLike | None = None,
    downloader: Callable | None = None,
) -> AnnData:
    """Mouse olfactory bulb, legacy Spatial Transcriptomics, 4 sections of 2 individuals (STUtility, MIT).

    ``obs['patient']`` is the individual (MOB1, MOB2: ``'1'``; MOB3, MOB4: ``'2'``). Genes are Ensembl ids.
    Images are low resolution (about 23 px per array step).

    Parameters
    ----------
    sections
        Sections to read.
    path
        Folder with local copies (``MOB{i}.tsv``, ``alignment_table_MOB{i}.tsv``, ``MOB{i}.jpg``).
    cache_dir, downloader
        As in :func:`her2st`.

    Returns
    -------
    All sections in one AnnData.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.mob(path="../shared/data/mob")  # doctest: +SKIP
    """
    sections = [sections] if isinstance(sections, str) else list(sections)
    registry = _registry()
    slides = []
    for section in sections:
        if section not in MOB_INDIVIDUAL:
            msg = f"Unknown MOB section {section!r}; choose from {list(MOB_INDIVIDUAL)}."
            raise ValueError(msg)
        names = {"counts": f"{section}.tsv", "spots": f"alignment_table_{section}.tsv", "image": f"{section}.jpg"}
        if path is not None:
            found = {kind: _find(Path(path), [name], f"{kind} of {section}") for kind, name in names.items()}
        else:
            found = {}
            for kind, name in names.items():
                remote, digest = registry[f"mob/{name}"]
                found[kind] = fetch(
                    f"mob/{name}", STUTILITY_URL + remote, digest, cache_dir=cache_dir, downloader=downloader
                )
        slides.append(
            read_st(
                found["counts"], found["spots"], found["image"], library_id=section, patient=MOB_INDIVIDUAL[section]
            )
        )
    return concat(slides)


def visium_breast_cancer(
    *,
    path: str | PathLike | None = None,
    cache_dir: str | PathLike | None = None,
    downloader: Callable | None = None,
) -> AnnData:
    """10x Visium human breast cancer, Block A Section 1 (10x Genomics demo data, Space Ranger 1.1.0).

    Downloads the filtered count matrix, the ``spatial/`` folder and the full-resolution H&E TIFF
    (about 0.7 GB in all) unless ``path`` points at a Space Ranger ``outs`` folder.

    Parameters
    ----------
    path
        A local Space Ranger ``outs`` folder of this (or any) Visium sample.
    cache_dir, downloader
        As in :func:`her2st`.

    Returns
    -------
    The slide as read by :func:`stpredict.io.read_visium`.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.visium_breast_cancer()  # doctest: +SKIP
    """
    import tarfile

    from ..io import read_visium

    library_id = "V1_Breast_Cancer_Block_A_Section_1"
    if path is not None:
        return read_visium(path, library_id=library_id, patient="block_A")
    fetched = {
        name: fetch(f"visium_bc/{name}", VISIUM_BC_URL + name, digest, cache_dir=cache_dir, downloader=downloader)
        for name, digest in VISIUM_BC_FILES.items()
    }
    outs = fetched[next(iter(VISIUM_BC_FILES))].parent
    counts = outs / "filtered_feature_bc_matrix.h5"
    if not counts.exists():
        counts.symlink_to(fetched["V1_Breast_Cancer_Block_A_Section_1_filtered_feature_bc_matrix.h5"].name)
    if not (outs / "spatial").is_dir():
        with tarfile.open(fetched["V1_Breast_Cancer_Block_A_Section_1_spatial.tar.gz"]) as archive:
            archive.extractall(outs, filter="data")
    return read_visium(
        outs,
        library_id=library_id,
        patient="block_A",
        source_image_path=fetched["V1_Breast_Cancer_Block_A_Section_1_image.tif"],
    )
