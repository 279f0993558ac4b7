"""Any registered models under one protocol, with honest folds.

- HER2ST patient C, sections C2-C6 (the sections with public images): leave-one-section-out (one patient,
  so within-patient; optimistic by design).
- Mouse olfactory bulb (STUtility), 4 sections of 2 individuals: leave-one-individual-out.

Targets: ``log1p`` (normalize_total 1e4), and the same 8n- or SPCS-smoothed (``st.pp.smooth``, slide by
slide). Every prediction is scored against the measured ``log1p`` values, whatever the training target.
Genes: the 250 most expressed, selected on each fold's training slides. Representation: one ``obsm`` key
for every model (default: 44 handcrafted colour/texture features). PCC(H): the 50 genes with the best
inner-validation Pearson on training slides. Per fold: PCC(M), PCC(H), PCC-Patch, MSE, fit and predict
wall time; per (data set, model, target): peak extra resident memory.

Usage::

    python benchmarks/bench_models.py --shared ../shared/data --models ridge ridge_spatial mlp
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
from anndata import AnnData

import stpredict as st

DATASETS = {
    # name: (label, loader, split method, patch size, unit)
    "her2st": (
        "HER2ST C2-C6",
        lambda d: st.datasets.her2st(["C2", "C3", "C4", "C5", "C6"], path=d / "her2st"),
        {"method": "leave_one_slide_out", "allow_shared_patients": True},
        224,
        "px",
    ),
    # MOB images have ~8.7 µm/px: a 224 px patch would cover the whole section; use one array pitch (200 µm)
    "mob": ("MOB", lambda d: st.datasets.mob(path=d / "mob"), {"method": "leave_one_patient_out"}, 200, "um"),
}
TARGETS = {"log1p": None, "8n": "8n", "spcs": "spcs"}


class PeakMemory:
    """Peak resident memory of this process above its level at entry, sampled every 20 ms."""

    def __enter__(self):
        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.extra_mb = (self.peak - self.base) / 2**20


def prepare(name: str, shared: Path, targets: list[str], rep: str) -> tuple[AnnData, list]:
    label, load, split, size, unit = DATASETS[name]
    adata = load(shared)
    st.pp.normalize(adata)
    for target in targets:
        if TARGETS[target] is not None:
            st.pp.smooth(
                adata, method=TARGETS[target], layer="log1p", key_added=f"log1p_{target}", show_progress_bar=False
            )
    if rep not in adata.obsm:
        st.pp.image_features(adata, size=size, unit=unit, show_progress_bar=False, key_added=rep)
    return adata, st.tl.make_splits(adata, **split)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--models", nargs="+", default=["ridge", "ridge_spatial", "mlp"])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--rep", default="X_handcrafted", help="obsm representation every model reads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/models.csv"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    started = time.perf_counter()
    tables = []
    for name in args.datasets:
        t0 = time.perf_counter()
        adata, folds = prepare(name, args.shared, args.targets, args.rep)
        print(
            f"{DATASETS[name][0]}: {adata.n_obs} spots, {len(folds)} folds, prepared in {time.perf_counter() - t0:.0f} s"
        )
        for model in args.models:
            for target in args.targets:
                layer = "log1p" if TARGETS[target] is None else f"log1p_{target}"
                with PeakMemory() as memory:
                    table = st.tl.cross_validate(
                        adata,
                        splits=folds,
                        model=model,
                        layer=layer,
                        eval_layer="log1p",
                        use_rep=args.rep,
                        device=args.device,
                        key_added="cv",
                        show_progress_bar=False,
                    )
                table.insert(0, "dataset", DATASETS[name][0])
                table.insert(1, "model", model)
                table.insert(2, "target", target)
                table["peak_extra_mb"] = memory.extra_mb
                tables.append(table)
                print(
                    f"  {model:>14} on {target:>5}: PCC(M) {table.pcc_m.mean():.3f}  PCC(H) {table.pcc_h.mean():.3f}  "
                    f"MSE {table.mse.mean():.3f}  fit {table.groupby('fold').fit_s.first().sum():.1f} s  "
                    f"peak +{memory.extra_mb:.0f} MB"
                )
    results = pd.concat(tables, ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out, index=False)
    summary = results.groupby(["dataset", "model", "target"], sort=False).agg(
        pcc_m=("pcc_m", "mean"),
        pcc_h=("pcc_h", "mean"),
        pcc_patch=("pcc_patch", "mean"),
        mse=("mse", "mean"),
        fit_s_per_fold=("fit_s", "mean"),
        predict_s_per_fold=("predict_s", "mean"),
        peak_extra_mb=("peak_extra_mb", "max"),
    )
    print("\nmean over held-out slides:")
    print(summary.round(3).to_string())
    figure(results, args.out.with_suffix(".png"))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; results in {args.out}")


def figure(results: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    grid = sns.catplot(
        data=results,
        x="target",
        y="pcc_m",
        hue="model",
        col="dataset",
        kind="bar",
        errorbar=None,
        height=3.2,
        aspect=1.2,
        sharey=False,
    )
    grid.map_dataframe(
        sns.stripplot, x="target", y="pcc_m", hue="model", dodge=True, palette="dark:k", size=3, legend=False
    )
    grid.set_axis_labels("training target (scored against log1p)", "PCC(M) per held-out slide")
    grid.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
