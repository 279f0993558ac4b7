"""ResNet18 inference throughput, and an encoder trained on the training sections vs handcrafted features.

HER2ST C2-C6, leave-one-section-out. In each fold the encoder (ResNet18 from scratch, supervised on the
fold's 250 most expressed training genes, patches resized to ``--input-size``) sees only the training
sections; ridge then reads its embeddings exactly as it reads the handcrafted features.

Usage::

    python benchmarks/bench_encoder.py --shared ../shared/data --epochs 15 --input-size 64
    python benchmarks/bench_encoder.py --throughput-only --batch-size 256   # e.g. on a GPU machine
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import stpredict as st
from stpredict._device import resolve_device


def inference_throughput(adata, device: str, path: Path, batch_size: int = 64, repeats: int = 1) -> float:
    """Patches/s of ResNet18 through st.pp's embedding path (bfloat16 autocast on GPU)."""
    import torchvision

    from stpredict.pp._encoders import embed_patches

    torch.save(torchvision.models.resnet18().state_dict(), path)  # weights do not change the speed
    library = adata.obs["library_id"].iloc[0]
    patches = st.pp.extract_patches(adata[adata.obs["library_id"] == library])
    patches = np.concatenate([patches] * repeats)
    model, spec = st.pp.load_encoder("resnet18", checkpoint=path)
    embed_patches(model, spec, patches[:batch_size], device)  # warm-up (cuDNN autotuning, allocations)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for chunk in range(0, len(patches), batch_size):
        embed_patches(model, spec, patches[chunk : chunk + batch_size], device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(patches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/encoder.csv"))
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="only time ResNet18 inference, on the bundled crop (no shared data needed; for the GPU machine)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = resolve_device("auto", needed=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.throughput_only:
        crop = st.datasets.her2st_crop()
        speed = inference_throughput(crop, device, args.out.parent / "resnet18_random.pt", args.batch_size, repeats=20)
        name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
        print(f"ResNet18 inference on {name}: {speed:.0f} patches/s (224 px, batch {args.batch_size}, bf16 on GPU)")
        return

    adata = st.datasets.her2st(["C2", "C3", "C4", "C5", "C6"], path=args.shared / "her2st")
    st.pp.normalize(adata)
    speed = inference_throughput(adata[adata.obs["library_id"] == "C3"], device, args.out.parent / "resnet18_random.pt")
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    print(f"ResNet18 inference on {name}: {speed:.0f} patches/s (224 px, batch 64)")
    st.pp.image_features(adata, show_progress_bar=False)

    rows = []
    for fold in st.tl.make_splits(adata, method="leave_one_slide_out", allow_shared_patients=True):
        train = adata[adata.obs["library_id"].isin(fold.train)].copy()
        test = adata[adata.obs["library_id"].isin(fold.test)].copy()
        st.pp.select_genes(train, n_genes=250)
        start = time.perf_counter()
        encoder = st.tl.train_encoder(
            train,
            input_size=args.input_size,
            epochs=args.epochs,
            device=device,
            show_progress_bar=False,
            random_state=0,
        )
        train_time = time.perf_counter() - start
        test.obsm["X_encoder"] = encoder.embed(test, device=device)
        for part in (train, test):
            part.obsm["X_both"] = np.hstack([part.obsm["X_handcrafted"], part.obsm["X_encoder"]])
        for rep in ("X_handcrafted", "X_encoder", "X_both"):
            st.tl.fit_predict(train, test, use_rep=rep, key_added=rep)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                scores = st.tl.evaluate(test, layer_pred=rep, inplace=False)
            rows.append(
                {
                    "fold": fold.name,
                    "representation": rep,
                    "pcc_m": scores["pearson"].mean(),
                    "mse": scores["mse"].mean(),
                    "encoder_train_s": train_time,
                }
            )
        print(pd.DataFrame(rows[-3:]).round(3).to_string(index=False))
    table = pd.DataFrame(rows)
    table.to_csv(args.out, index=False)
    print(table.groupby("representation")[["pcc_m", "mse"]].mean().round(3))


if __name__ == "__main__":
    main()
