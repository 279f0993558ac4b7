"""The small real fixture shipped inside the package (for tests, doctests, tutorials and the demo)."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from anndata import AnnData

from ..io import concat, read_st

_CROP = "her2st_crop"


def _crop_dir() -> Path:
    return Path(str(files("stpredict.datasets").joinpath("_data", _CROP)))


def her2st_crop_provenance() -> dict:
    """Where the bundled crop comes from: source files, checksums, crop boxes (see ``tools/make_her2st_crop.py``).

    Examples
    --------
    >>> import stpredict as st
    >>> st.datasets.her2st_crop_provenance()["sections"]["C2"]["crop_box_px"]
    [4723, 4777, 7391, 7162]
    """
    return json.loads((_crop_dir() / "provenance.json").read_text())


def her2st_crop_files() -> dict[str, dict[str, Path]]:
    """Paths of the bundled crop's raw files, per section: ``{'C2': {'counts', 'spots', 'image'}, ...}``.

    Examples
    --------
    >>> import stpredict as st
    >>> sorted(st.datasets.her2st_crop_files())
    ['C2', 'C3', 'C4']
    """
    root = _crop_dir()
    sections = her2st_crop_provenance()["sections"]
    return {
        s: {"counts": root / f"{s}.tsv.gz", "spots": root / f"{s}_selection.tsv", "image": root / f"{s}.jpg"}
        for s in sections
    }


def her2st_crop() -> AnnData:
    """Three real HER2ST sections of patient C, cropped to about 70 spots each (213 spots, ~14k genes).

    A 9 x 8 array window of sections C2, C3 and C4 (Andersson et al. 2021, Nat. Commun. 12:6012;
    github almaan/her2st @85df741) with its full-resolution H&E crop (~0.69 µm/px). Small enough for
    tests and the demo; real enough that models learn something.

    Returns
    -------
    AnnData with raw counts, spot positions and images (see :func:`stpredict.io.read_st`).

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> adata.n_obs, adata.obs["library_id"].cat.categories.tolist()
    (213, ['C2', 'C3', 'C4'])
    """
    slides = [
        read_st(f["counts"], f["spots"], f["image"], library_id=section, patient="C")
        for section, f in her2st_crop_files().items()
    ]
    return concat(slides)
