"""HEST-1k (Jaume et al., NeurIPS 2024): choose samples from its metadata table, fetch only those, read lazily.

HEST-1k (https://huggingface.co/datasets/MahmoodLab/hest, CC BY-NC-SA 4.0, gated: accept its terms on that
page and log in with ``huggingface-cli login``) holds ~1,100 samples as ``st/<id>.h5ad``, ``wsis/<id>.tif``
and ``metadata/<id>.json``, indexed by ``HEST_v1_1_0.csv`` (one row per sample: ``id``, ``organ``,
``species``, ``st_technology``, ``oncotree_code``, ``patient``, ``pixel_size_um_estimated`` ...). Users select
by organ, technology or species and iterate over hundreds of samples: :func:`hest` returns the selection,
whose samples are downloaded (when online) and read one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import pandas as pd
from anndata import AnnData

from .._logging import logger

HEST_REPO = "MahmoodLab/hest"
HEST_INDEX = "HEST_v1_1_0.csv"
HEST_PAGE = "https://huggingface.co/datasets/MahmoodLab/hest"
#: files of one sample read by st.io.read_hest
#: a sample's files by asset name (HEST-1k's folders)
ASSET_FILES = {
    "st": "st/{id}.h5ad",
    "metadata": "metadata/{id}.json",
    "wsis": "wsis/{id}.tif",
    "patches": "patches/{id}.h5",  # 224 px at 0.5 µm/px around every spot: a patch-only download skips the WSI
    "cellvit_seg": "cellvit_seg/{id}_cellvit_seg.parquet",  # CellViT nuclei (image_features(segmentation='cellvit'))
}
DEFAULT_ASSETS = ("st", "wsis", "metadata")
#: filter arguments and the metadata column each matches
NAMED_FILTERS = {"organ": "organ", "technology": "st_technology", "species": "species"}

#: fetches ``patterns`` (paths relative to the HEST root) into ``root``
Downloader = Callable[[list[str], Path], None]


def _hub_download(patterns: list[str], root: Path) -> None:
    """Fetch files of the HEST-1k data set from the Hugging Face hub, with errors that say what to do."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError
    except ImportError as err:  # pragma: no cover - huggingface_hub comes with timm
        msg = "Downloading HEST-1k needs huggingface_hub (pip install huggingface_hub), or pass path= to a local copy."
        raise ImportError(msg) from err
    try:
        snapshot_download(HEST_REPO, repo_type="dataset", allow_patterns=patterns, local_dir=root)
    except GatedRepoError as err:
        msg = (
            f"HEST-1k is gated: accept its terms (CC BY-NC-SA 4.0) at {HEST_PAGE} with your Hugging Face account, "
            "then log in here with `huggingface-cli login` (or set HF_TOKEN). Offline, pass path= to a local copy."
        )
        raise PermissionError(msg) from err
    except LocalEntryNotFoundError as err:
        msg = f"Could not reach the Hugging Face hub to fetch {patterns[:3]}: offline? Pass path= to a local copy."
        raise ConnectionError(msg) from err


@dataclass
class HestSelection:
    """HEST-1k samples chosen from its metadata table; iterate to read them one at a time (lazily).

    Attributes
    ----------
    metadata
        The chosen rows of HEST's metadata table, indexed by sample id.
    root
        Where the samples' files are (a local copy, or the download folder).
    """

    metadata: pd.DataFrame
    root: Path
    downloader: Downloader | None = field(default=None, repr=False)
    assets: tuple[str, ...] = DEFAULT_ASSETS

    @property
    def ids(self) -> list[str]:
        return self.metadata.index.tolist()

    def __len__(self) -> int:
        return len(self.metadata)

    def __iter__(self) -> Iterator[AnnData]:
        for sample_id in self.ids:
            yield self.read(sample_id)

    def __repr__(self) -> str:
        counts = self.metadata.get("st_technology", pd.Series(dtype=str)).value_counts().to_dict()
        return f"HestSelection({len(self)} samples {self.ids[:5]}{' ...' if len(self) > 5 else ''}, {counts}, root={str(self.root)!r})"

    def missing(self, sample_id: str) -> list[str]:
        """Files of ``sample_id`` not under :attr:`root` yet."""
        paths = [ASSET_FILES[asset].format(id=sample_id) for asset in self.assets]
        return [p for p in paths if not (self.root / p).is_file()]

    def download(self) -> HestSelection:
        """Fetch the files of every chosen sample not present yet (only those; nothing else of HEST-1k)."""
        patterns = [p for sample_id in self.ids for p in self.missing(sample_id)]
        if patterns:
            self._fetch(patterns)
        return self

    def read(self, sample_id: str, **kwargs) -> AnnData:
        """One chosen sample as AnnData (:func:`stpredict.io.read_hest`), fetched first when missing."""
        from ..io import read_hest

        if sample_id not in self.metadata.index:
            msg = f"{sample_id!r} is not in this selection ({len(self)} samples, e.g. {self.ids[:5]})."
            raise KeyError(msg)
        missing = self.missing(sample_id)
        if missing:
            self._fetch(missing)
        return read_hest(self.root, sample_id, **kwargs)

    def _fetch(self, patterns: list[str]) -> None:
        if self.downloader is None:
            msg = (
                f"HEST files {patterns[:3]} are not under {str(self.root)!r}, and path= was given, so nothing is "
                f"downloaded. Copy them there, or call st.datasets.hest(...) without path= to fetch them from {HEST_PAGE}."
            )
            raise FileNotFoundError(msg)
        logger.info("hest: fetching %d file(s) into %s", len(patterns), self.root)
        self.downloader(patterns, self.root)


def _index(path: Path | None, cache: Path, downloader: Downloader | None) -> pd.DataFrame:
    """HEST's metadata table: the newest ``HEST_v*.csv`` of a local copy, else downloaded into ``cache``."""
    if path is not None:
        tables = sorted(path.glob("HEST_v*.csv"))
        if not tables:
            msg = f"No HEST metadata table (HEST_v*.csv, e.g. {HEST_INDEX}) in {str(path)!r}: is it a HEST-1k copy?"
            raise FileNotFoundError(msg)
        return pd.read_csv(tables[-1])
    if not (cache / HEST_INDEX).is_file():
        downloader([HEST_INDEX], cache)
    return pd.read_csv(cache / HEST_INDEX)


def _matches(column: pd.Series, wanted: str | Sequence[str]) -> pd.Series:
    values = [wanted] if isinstance(wanted, str) else list(wanted)
    return column.astype(str).str.lower().isin([str(v).lower() for v in values])


def hest(
    ids: Sequence[str] | None = None,
    *,
    organ: str | Sequence[str] | None = None,
    technology: str | Sequence[str] | None = None,
    species: str | Sequence[str] | None = None,
    path: str | PathLike | None = None,
    cache_dir: str | PathLike | None = None,
    downloader: Downloader | None = None,
    assets: Sequence[str] = DEFAULT_ASSETS,
    **columns: str | Sequence[str],
) -> HestSelection:
    """Choose HEST-1k samples from its metadata table; read them one by one by iterating.

    Parameters
    ----------
    ids
        Sample ids (e.g. ``['TENX95', 'NCBI783']``).
    organ, technology, species
        Values of the ``organ``, ``st_technology`` and ``species`` columns (one or several, any case), e.g.
        ``organ='Breast'``, ``technology=['Visium', 'Xenium']``, ``species='Homo sapiens'``.
    path
        A local copy of HEST-1k (``HEST_v*.csv``, ``st/``, ``wsis/``, ``metadata/``): nothing is downloaded.
    cache_dir
        Where downloads go without ``path`` (default: :func:`default_cache_dir` / ``hest``).
    downloader
        Replaces the Hugging Face download (``downloader(patterns, root)``), e.g. for a mirror.
    assets
        Which of each sample's files to fetch: ``'st'`` and ``'metadata'``, and ``'wsis'`` (the pyramidal WSI,
        GBs) and/or ``'patches'`` (HEST's 224 px patches at 0.5 µm/px around every spot, read by
        :func:`stpredict.io.read_hest` instead of the WSI whenever a request fits inside them). E.g.
        ``assets=('st', 'metadata', 'patches')`` trains on hundreds of samples without downloading a WSI;
        ``'cellvit_seg'`` adds HEST's CellViT nuclei (``st.pp.image_features(..., segmentation='cellvit')``).
    **columns
        Any other metadata column and its wanted value(s), e.g. ``oncotree_code='IDC'``, ``patient='P1'``.

    Returns
    -------
    A :class:`HestSelection`: ``.metadata`` (the chosen rows), ``len()``, iteration yielding AnnData (as
    :func:`stpredict.io.read_hest`), ``.read(id)``, ``.download()``.

    Examples
    --------
    >>> import stpredict as st
    >>> breast = st.datasets.hest(organ="Breast", technology="Visium", species="Homo sapiens")  # doctest: +SKIP
    >>> for adata in breast:  # doctest: +SKIP
    ...     st.pp.normalize(adata)
    """
    from ._download import default_cache_dir

    assets = tuple(assets)
    unknown = sorted(set(assets) - set(ASSET_FILES))
    if unknown or not {"st", "metadata"} <= set(assets) or not {"wsis", "patches"} & set(assets):
        msg = (
            f"assets={assets!r}: choose from {sorted(ASSET_FILES)}, with 'st', 'metadata' and at least one of "
            "'wsis' or 'patches' (the images)."
        )
        raise ValueError(msg)
    local = Path(path) if path is not None else None
    root = local or Path(cache_dir or default_cache_dir() / "hest")
    fetch = None if local is not None else (downloader or _hub_download)
    table = _index(local, root, fetch)
    if "id" not in table:
        msg = f"The HEST metadata table has no 'id' column (columns: {list(table.columns)[:10]} ...)."
        raise ValueError(msg)
    chosen = pd.Series(True, index=table.index)
    wanted = {
        NAMED_FILTERS[k]: v for k, v in {"organ": organ, "technology": technology, "species": species}.items() if v
    }
    wanted |= dict(columns)
    if ids is not None:
        wanted["id"] = list(ids)
    for column, values in wanted.items():
        if column not in table:
            msg = f"HEST's metadata table has no column {column!r}; columns: {sorted(table.columns)}."
            raise KeyError(msg)
        hit = _matches(table[column], values)
        if not (chosen & hit).any():
            known = sorted(table.loc[chosen, column].dropna().astype(str).unique())
            msg = f"No HEST sample has {column}={values!r} among those chosen so far; values there: {known[:30]}."
            raise ValueError(msg)
        chosen &= hit
    metadata = table[chosen].set_index("id")
    logger.info("hest: %d of %d samples chosen", len(metadata), len(table))
    return HestSelection(metadata=metadata, root=root, downloader=fetch, assets=assets)
