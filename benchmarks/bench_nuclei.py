"""Nuclei features on a HER2ST section: patches per second, end to end and per core, against an older checkout.

``st.pp.image_features(adata, method="nuclei")`` on a full HER2ST section (the JPEG decoded, 224 px patches
at ~0.69 µm/px), one core (``n_jobs=None``) and ``n_jobs=2``; and the extractor alone on patches already in
memory. With ``--old-src`` the same measurements run in a subprocess on another checkout's ``src`` (for
example the commit before this work), and the two feature matrices are compared column by column.

Usage::

    python benchmarks/bench_nuclei.py --her2st ../shared/data/her2st --section C3 --old-src /tmp/oldsrc/src
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import stpredict as st


def measure(her2st: Path, section: str, features_out: Path | None) -> dict:
    """Patches per second of this interpreter's stpredict; optionally saves the one-core features."""
    from stpredict.pp._nuclei import nuclei_features

    adata = st.datasets.her2st([section], path=her2st)
    mpp = adata.uns["spatial"][section]["scalefactors"]["microns_per_pixel"]
    patches = st.pp.extract_patches(adata)
    nuclei_features(patches[:2], mpp)  # compile / warm caches
    started = time.perf_counter()
    nuclei_features(patches, mpp)
    result = {"spots": adata.n_obs, "extractor_1_core": len(patches) / (time.perf_counter() - started)}
    for n_jobs in (None, 2):
        started = time.perf_counter()
        st.pp.image_features(adata, method="nuclei", n_jobs=n_jobs, show_progress_bar=False)
        result[f"end_to_end_n_jobs_{n_jobs}"] = adata.n_obs / (time.perf_counter() - started)
    if features_out is not None:
        np.save(features_out, adata.obsm["X_nuclei"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--her2st", type=Path, default=Path("../shared/data/her2st"))
    parser.add_argument("--section", default="C3")
    parser.add_argument("--old-src", type=Path, default=None, help="src/ of a checkout to compare with")
    parser.add_argument("--features-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.features_out is not None:  # the subprocess measuring the other checkout
        print(json.dumps(measure(args.her2st, args.section, args.features_out)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        now_path, old_path = Path(tmp) / "now.npy", Path(tmp) / "old.npy"
        results = {"now": measure(args.her2st, args.section, now_path)}
        if args.old_src is not None:
            env = {**os.environ, "PYTHONPATH": str(args.old_src.resolve())}
            command = [sys.executable, __file__, "--her2st", str(args.her2st), "--section", args.section]
            output = subprocess.run([*command, "--features-out", str(old_path)], env=env, check=True,
                                    capture_output=True, text=True).stdout  # fmt: skip
            results["before"] = json.loads(output.strip().splitlines()[-1])
            now, old = np.load(now_path), np.load(old_path)
            scale = np.maximum(np.abs(old).max(axis=0), 1e-12)
            difference = np.abs(now - old).max(axis=0) / scale
            # orientation is an axis angle: scikit-image gives nuclei lying exactly along an image axis +pi/2 or
            # -pi/2 (the same axis) by rounding noise in its moments, so its per-patch mean may differ
            orientation = st.pp.nuclei_feature_names().index("nuclei_orientation")
            results["max_relative_difference_orientation"] = float(difference[orientation])
            results["max_relative_difference_other_17"] = float(np.delete(difference, orientation).max())
            results["speed_up_per_core"] = results["now"]["extractor_1_core"] / results["before"]["extractor_1_core"]
    print(json.dumps({"section": args.section, **results}, indent=1))


if __name__ == "__main__":
    main()
