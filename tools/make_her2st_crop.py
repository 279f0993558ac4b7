"""Build the small real test fixture shipped in ``stpredict.datasets``.

The fixture is a crop of three HER2ST sections of patient C (Andersson et al. 2021,
Nat. Commun. 12:6012; files from github almaan/her2st @85df741), kept in the original
legacy Spatial Transcriptomics format so that the package's own reader is exercised on it.

For each section we keep the 9 x 8 array window with the most spots, the image region
around those spots (plus a margin of ``MARGIN`` pixels so that 224 px patches of edge spots
stay inside the crop) re-encoded as JPEG, the count rows of those spots (genes never detected
in the crop are dropped), and the spot table with pixel coordinates shifted into the crop.

Usage::

    python tools/make_her2st_crop.py ../shared/data/her2st src/stpredict/datasets/_data/her2st_crop
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

Image.MAX_IMAGE_PIXELS = None

SECTIONS = {"C2": "C2_5714_HE_BT_C2.jpg", "C3": "C3_5714_HE_BT_D1.jpg", "C4": "C4_5714_HE_BT_D2.jpg"}
WINDOW = (9, 8)  # array columns (x) x array rows (y)
MARGIN = 160  # px around the outermost spot centres
JPEG_QUALITY = 70


def _best_window(spots: pd.DataFrame) -> tuple[int, int]:
    best = (-1, 0, 0)
    for x0 in range(spots.x.min(), spots.x.max() + 1):
        for y0 in range(spots.y.min(), spots.y.max() + 1):
            inside = spots.x.between(x0, x0 + WINDOW[0] - 1) & spots.y.between(y0, y0 + WINDOW[1] - 1)
            best = max(best, (int(inside.sum()), x0, y0))
    return best[1], best[2]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    provenance = {
        "source": "github almaan/her2st @85df741 (Andersson et al. 2021, Nat. Commun. 12:6012)",
        "window_array_steps": WINDOW,
        "margin_px": MARGIN,
        "jpeg_quality": JPEG_QUALITY,
        "sections": {},
    }
    for section, image_name in SECTIONS.items():
        spots = pd.read_csv(src / "spots" / f"{section}_selection.tsv", sep="\t")
        counts = pd.read_csv(src / "counts" / f"{section}.tsv.gz", sep="\t", index_col=0)
        x0, y0 = _best_window(spots)
        keep = spots.x.between(x0, x0 + WINDOW[0] - 1) & spots.y.between(y0, y0 + WINDOW[1] - 1)
        spots = spots[keep].copy()
        spot_ids = [f"{x}x{y}" for x, y in zip(spots.x, spots.y, strict=True)]
        counts = counts.loc[counts.index.intersection(spot_ids)]
        counts = counts.loc[:, counts.sum(axis=0) > 0]

        left = int(np.floor(spots.pixel_x.min() - MARGIN))
        top = int(np.floor(spots.pixel_y.min() - MARGIN))
        right = int(np.ceil(spots.pixel_x.max() + MARGIN))
        bottom = int(np.ceil(spots.pixel_y.max() + MARGIN))
        with Image.open(src / "images" / image_name) as image:
            crop = image.crop((left, top, right, bottom))
        crop.save(dst / f"{section}.jpg", "JPEG", quality=JPEG_QUALITY)
        spots["pixel_x"] = (spots.pixel_x - left).round(2)
        spots["pixel_y"] = (spots.pixel_y - top).round(2)
        spots.to_csv(dst / f"{section}_selection.tsv", sep="\t", index=False)
        counts.to_csv(dst / f"{section}.tsv.gz", sep="\t", compression={"method": "gzip", "mtime": 0})

        provenance["sections"][section] = {
            "counts": f"counts/{section}.tsv.gz",
            "spots": f"spots/{section}_selection.tsv",
            "image": f"images/{image_name}",
            "image_sha256": _sha256(src / "images" / image_name),
            "array_window_x": [x0, x0 + WINDOW[0] - 1],
            "array_window_y": [y0, y0 + WINDOW[1] - 1],
            "crop_box_px": [left, top, right, bottom],
            "n_spots": int(len(counts)),
            "n_genes": int(counts.shape[1]),
        }
    (dst / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
