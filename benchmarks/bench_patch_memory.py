"""Peak memory of image features with very large patches (the "11 GB surprise" of the hardening issue).

``st.pp.image_features(adata, size=5000)`` on the bundled crop (213 spots): patches of 5,000 px are 286 MiB
each as floats, so batches of 256 would need 73 GiB. Each run is a fresh process so that its peak resident
memory (``ru_maxrss``) is its own. Pass ``--src`` to measure another checkout (e.g. the code before the guard).

Usage::

    python benchmarks/bench_patch_memory.py --spots 213 --size 5000
    python benchmarks/bench_patch_memory.py --spots 60 --size 5000 --src /path/to/old/checkout/src
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = """
import json, resource, sys, time, warnings
import stpredict as st
warnings.simplefilter("ignore")
n_spots, size = int(sys.argv[1]), float(sys.argv[2])
adata = st.datasets.her2st_crop()[:n_spots].copy()
started = time.perf_counter()
st.pp.image_features(adata, size=size, show_progress_bar=False)
print(json.dumps({"spots": n_spots, "size_px": size, "seconds": round(time.perf_counter() - started, 1),
                  "peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spots", type=int, default=213)
    parser.add_argument("--size", type=float, default=5000)
    parser.add_argument("--src", help="PYTHONPATH of another checkout's src/ to measure instead")
    args = parser.parse_args()
    env = dict(os.environ, **({"PYTHONPATH": args.src} if args.src else {}))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(args.spots), str(args.size)], env=env, capture_output=True, text=True
    )
    if done.returncode:
        print(done.stderr[-2000:], file=sys.stderr)
        raise SystemExit(done.returncode)
    print(json.dumps({**json.loads(done.stdout.strip().splitlines()[-1]), "src": args.src or "installed"}))


if __name__ == "__main__":
    main()
