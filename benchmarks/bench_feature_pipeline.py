"""The encoder's data pipeline: DataLoader workers against the decode-only floor, the feature cache, resume.

Five synthetic pyramidal whole-slide images (``bench_wsi.write_synthetic``: JPEG tiles, 0.5 µm/px) are read
with ``st.io.read_wsi`` (virtual 55 µm spots on the tissue); patches are 224 px level-0 regions.

1. Throughput (patches/s) of ``st.pp.image_features`` with ResNet18 and a ViT-B/16 (random weights of the
   real architecture: weights do not change the speed) for ``num_workers`` 0, 1, 2, beside two floors: the
   decode-only floor (reading and cutting the patches, no model) and the model-only floor (the encoder on
   patches already in memory). A pipeline can go no faster than the slower of the two; the target is
   ≥ 0.8× the decode floor wherever decoding is the bottleneck (on a GPU), else ≥ 0.8× the model floor.
   No GPU here: a GPU encoder is emulated by waiting (CPU free) as long as a 2,000 patches/s GPU would take,
   to see whether workers hide decoding when decoding is the bottleneck.
2. The feature cache: the same five slides computed once into ``cache_dir``, then again from the cache.
3. Resume: a run over the five slides in a separate process is killed (SIGKILL) once half of the spots are
   cached; the rerun computes only the spots the cache lacks and gives the same features as an
   uninterrupted run.

Usage::

    python benchmarks/bench_feature_pipeline.py --side 16384 --out benchmarks/results/feature_pipeline.csv
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_wsi import write_synthetic  # noqa: E402

import stpredict as st  # noqa: E402
from stpredict._recipe import FeatureRecipe
from stpredict.pp._encoders import embed_patches  # noqa: E402
from stpredict.pp._feature_cache import FeatureCache  # noqa: E402
from stpredict.pp._loader import patch_batches  # noqa: E402

ENCODERS = {"resnet18": "resnet18", "vit_b_16": "timm:vit_base_patch16_224"}


def slides(folder: Path, side: int, n: int = 5):
    """``n`` synthetic slides (written once; slide i differs by its texture seed) read as virtual spots."""
    import anndata as ad

    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(n):
        path = folder / f"slide{i}_{side}.tif"
        if not path.exists():
            write_synthetic(path, side, rng_seed=i)
        parts.append(st.io.read_wsi(path, library_id=f"slide{i}"))
    return ad.concat(parts, uns_merge="unique", index_unique=None)


def random_checkpoint(name: str, folder: Path) -> Path:
    path = folder / f"{name}_random.pt"
    if not path.exists():
        model, _ = st.pp.load_encoder(ENCODERS[name], random_weights=True)
        torch.save(model.state_dict(), path)
    return path


def decode_floor(adata, batch_size: int) -> float:
    started = time.perf_counter()
    n = sum(len(positions) for _, positions, _ in patch_batches(adata, size=224, batch_size=batch_size))
    return n / (time.perf_counter() - started)


def model_floor(adata, name: str, checkpoint: Path, batch_size: int) -> float:
    model, spec = st.pp.load_encoder(ENCODERS[name], checkpoint=checkpoint)
    patches = st.pp.extract_patches(adata)
    embed_patches(model, spec, patches[:8])  # warm-up
    started = time.perf_counter()
    for chunk in range(0, len(patches), batch_size):
        embed_patches(model, spec, patches[chunk : chunk + batch_size])
    return len(patches) / (time.perf_counter() - started)


def pipeline(adata, name: str, checkpoint: Path, batch_size: int, num_workers: int, cache_dir=None) -> float:
    started = time.perf_counter()
    st.pp.image_features(
        adata, method=ENCODERS[name], checkpoint=checkpoint, batch_size=batch_size, num_workers=num_workers,
        cache_dir=cache_dir, show_progress_bar=False,
    )  # fmt: skip
    return adata.n_obs / (time.perf_counter() - started)


def throughput_rows(adata, folder: Path, batch_size: int, spots: dict[str, int]) -> list[dict]:
    rows = []
    for name in spots:
        part = adata[: spots[name]].copy()
        checkpoint = random_checkpoint(name, folder)
        floors = {"decode": decode_floor(part, batch_size), "model": model_floor(part, name, checkpoint, batch_size)}
        for stage, speed in floors.items():
            rows.append({"encoder": name, "run": f"{stage}-only floor", "spots": part.n_obs, "patches_per_s": speed})
        bound = min(floors.values())
        for workers in (0, 1, 2):
            speed = pipeline(part, name, checkpoint, batch_size, workers)
            rows.append({"encoder": name, "run": f"image_features, num_workers={workers}", "spots": part.n_obs,
                         "patches_per_s": speed, "vs_bound": speed / bound})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def emulated_gpu_rows(adata, batch_size: int, gpu_patches_per_s: float) -> list[dict]:
    """Patches/s when the model is a GPU: the main process waits ``batch / gpu_patches_per_s`` per batch with the
    CPU free (a sleep, as while a CUDA kernel runs), so decoding is the bottleneck that workers must hide."""
    rows = []
    floor = decode_floor(adata, batch_size)
    rows.append({"encoder": f"emulated GPU ({gpu_patches_per_s:.0f} patches/s)", "run": "decode-only floor",
                 "spots": adata.n_obs, "patches_per_s": floor})  # fmt: skip
    for workers in (0, 1, 2):
        started = time.perf_counter()
        for _, _, patches in patch_batches(adata, size=224, batch_size=batch_size, num_workers=workers):
            time.sleep(len(patches) / gpu_patches_per_s)
        speed = adata.n_obs / (time.perf_counter() - started)
        rows.append({"encoder": f"emulated GPU ({gpu_patches_per_s:.0f} patches/s)", "run": f"patch_batches, "
                     f"num_workers={workers}", "spots": adata.n_obs, "patches_per_s": speed, "vs_bound": speed / floor})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def _features_in_child(path: str, cache_dir: str, checkpoint: str, batch_size: int) -> None:
    import anndata as ad

    adata = ad.read_h5ad(path)
    st.pp.image_features(adata, method="resnet18", checkpoint=checkpoint, batch_size=batch_size, cache_dir=cache_dir,
                         show_progress_bar=False)  # fmt: skip


def cache_and_resume_rows(adata, folder: Path, batch_size: int) -> list[dict]:
    checkpoint = random_checkpoint("resnet18", folder)
    cache_dir = folder / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    first = adata.copy()
    started = time.perf_counter()
    pipeline(first, "resnet18", checkpoint, batch_size, 0, cache_dir)
    first_s = time.perf_counter() - started
    second = adata.copy()
    started = time.perf_counter()
    pipeline(second, "resnet18", checkpoint, batch_size, 0, cache_dir)
    second_s = time.perf_counter() - started
    same = np.array_equal(first.obsm["X_resnet18"], second.obsm["X_resnet18"])
    rows = [{"run": "cache: first run (computes, writes)", "spots": adata.n_obs, "seconds": first_s},
            {"run": "cache: second run (served)", "spots": adata.n_obs, "seconds": second_s,
             "speed_up": first_s / second_s, "identical": same}]  # fmt: skip
    print(rows, flush=True)

    # Resume: kill a run in another process after about 2.5 slides' worth of time.
    shutil.rmtree(cache_dir, ignore_errors=True)
    stored = folder / "slides.h5ad"
    adata.write_h5ad(stored)
    child = multiprocessing.get_context("spawn").Process(
        target=_features_in_child, args=(str(stored), str(cache_dir), str(checkpoint), batch_size)
    )
    recipe = FeatureRecipe("resnet18", checkpoint_sha256=st.pp._features.file_sha256(checkpoint))
    child.start()
    while child.is_alive():  # kill it once about half of the spots are in the cache
        time.sleep(1)
        try:
            done = FeatureCache(cache_dir, recipe).lookup(adata, "library_id")[1].mean()
        except Exception:  # noqa: BLE001 - the cache is still being created
            continue
        if done >= 0.5:
            child.kill()
    child.join()
    _, cached, _ = FeatureCache(cache_dir, recipe).lookup(adata, "library_id")
    per_slide = pd.Series(cached).groupby(adata.obs["library_id"].to_numpy()).mean().round(3).to_dict()
    resumed = adata.copy()
    started = time.perf_counter()
    pipeline(resumed, "resnet18", checkpoint, batch_size, 0, cache_dir)
    resumed_s = time.perf_counter() - started
    same = np.allclose(resumed.obsm["X_resnet18"], first.obsm["X_resnet18"], atol=1e-5)
    rows.append({"run": "resume after kill", "spots": adata.n_obs, "seconds": resumed_s,
                 "cached_before_rerun": int(cached.sum()), "cached_fraction_per_slide": json.dumps(per_slide),
                 "identical": same})  # fmt: skip
    print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=16384)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/stpredict-bench/pipeline"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--resnet-spots", type=int, default=400)
    parser.add_argument("--vit-spots", type=int, default=120)
    parser.add_argument("--gpu-speed", type=float, default=2000.0, help="patches/s of the emulated GPU encoder")
    parser.add_argument("--encoders", nargs="*", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--no-emulated", dest="emulated", action="store_false", help="skip the emulated-GPU rows")
    parser.add_argument("--no-cache", dest="cache", action="store_false", help="skip the cache and resume rows")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/feature_pipeline.csv"))
    args = parser.parse_args()
    adata = slides(args.dir, args.side)
    print(f"{adata.n_obs} spots on 5 slides; torch threads {torch.get_num_threads()}", flush=True)
    rows = (
        emulated_gpu_rows(adata[: args.resnet_spots].copy(), args.batch_size, args.gpu_speed) if args.emulated else []
    )
    spots = {"resnet18": args.resnet_spots, "vit_b_16": args.vit_spots}
    rows += throughput_rows(adata, args.dir, args.batch_size, {name: spots[name] for name in args.encoders})
    if args.cache:
        rows += cache_and_resume_rows(adata, args.dir, args.batch_size)
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
