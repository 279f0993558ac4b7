"""Reference region labels of spots, such as the HER2ST pathologist annotations."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import ARRAY_COL, ARRAY_ROW, LIBRARY_KEY
from .._logging import logger
from .._validate import spot_libraries


def read_pathologist_labels(
    path: str | PathLike,
    adata: AnnData | None = None,
    *,
    library_id: str | None = None,
    key_added: str = "pathologist_label",
) -> pd.Series | None:
    """Pathologist region labels of a HER2ST section (``{section}_labeled_coordinates.tsv``).

    The file gives each labelled spot's array position (``x``, ``y``, as the spot detector's adjusted
    ``new_x``/``new_y``) and its ``label``. Spots are matched by their array position rounded to the
    grid. Without ``adata``: a Series ``label`` indexed by ``'{x}x{y}'`` spot ids. With ``adata``: written
    to ``obs[key_added]`` (categorical; spots without a label stay NaN) for the spots of ``library_id``
    (default: the file name's section) and ``None`` returned.

    Examples
    --------
    >>> import stpredict as st
    >>> labels = st.io.read_pathologist_labels("C1_labeled_coordinates.tsv")  # doctest: +SKIP
    """
    path = Path(path)
    table = pd.read_csv(path, sep="\t")
    missing = {"x", "y", "label"} - set(table.columns)
    if missing:
        msg = f"{path.name}: a label table needs columns x, y and label; missing {sorted(missing)}."
        raise KeyError(msg)
    spot_ids = table["x"].round().astype(int).astype(str) + "x" + table["y"].round().astype(int).astype(str)
    labels = pd.Series(table["label"].astype(str).to_numpy(), index=spot_ids.to_numpy(), name="label")
    if labels.index.duplicated().any():
        msg = f"{path.name}: several labels round to the same array position ({labels.index[labels.index.duplicated()][:3].tolist()})."
        raise ValueError(msg)
    if adata is None:
        return labels
    library_id = library_id or path.name.split("_")[0]
    mask = spot_libraries(adata) == library_id
    if not mask.any():
        msg = f"Slide {library_id!r} not in adata.obs[{LIBRARY_KEY!r}]; pass library_id=."
        raise KeyError(msg)
    ids = adata.obs[ARRAY_COL].astype(int).astype(str) + "x" + adata.obs[ARRAY_ROW].astype(int).astype(str)
    values = pd.Series(np.nan, index=adata.obs_names, dtype=object)
    values[mask] = ids[mask].map(labels).to_numpy()
    previous = adata.obs[key_added].astype(object) if key_added in adata.obs else None
    if previous is not None:
        values[~mask] = previous[~mask]
    adata.obs[key_added] = pd.Categorical(values)
    matched = int(values[mask].notna().sum())
    logger.info(
        "read_pathologist_labels: %d of %d spots of %s labelled (%d labels in the file)",
        matched,
        int(mask.sum()),
        library_id,
        len(labels),
    )
    return None
