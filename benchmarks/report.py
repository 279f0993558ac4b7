"""Write the generated tables of ``docs/benchmarks.md`` from ``benchmarks/results/*.csv``.

    python benchmarks/report.py          # rewrite every table between its markers
    python benchmarks/report.py --check  # exit 1 when the docs differ from the results files (CI runs this)

Each table sits between ``<!-- NAME -->`` and ``<!-- /NAME -->`` in ``docs/benchmarks.md``; NAME is a key of
:data:`TABLES` (the super-resolution tables of ``report_superres.py`` and the model tables here).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd
from report_superres import TABLES as SUPERRES_TABLES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"

#: the ensemble comparison: (data set, row label, results file, model name in it)
ENSEMBLE_ROWS = [
    ("HER2ST C2-C6", "ridge", "models_ensemble_crossfit", "ridge"),
    ("HER2ST C2-C6", "TRIPLEX", "models_probes_defaults_rest", "triplex"),
    ("HER2ST C2-C6", "M2TGLGO", "models_probes_defaults_rest", "m2tglgo"),
    ("HER2ST C2-C6", "SEPAL", "models_best_her2st", "sepal"),
    ("HER2ST C2-C6", "ensemble, default members (`'fast'`)", "models_ensemble_crossfit", "ensemble"),
    ("HER2ST C2-C6", "ensemble with M2TGLGO and TRIPLEX", "models_best_her2st", "ensemble_best"),
    ("HER2ST C2-C6", "the same, M2TGLGO stopping at patience 50", "models_best_her2st_m2tglgo_p50", "ensemble_best"),
    ("MOB", "ridge", "models_ensemble_crossfit", "ridge"),
    ("MOB", "TRIPLEX", "models_best_mob", "triplex"),
    ("MOB", "M2TGLGO", "models_best_mob", "m2tglgo"),
    ("MOB", "SEPAL", "models_best_mob", "sepal"),
    ("MOB", "ensemble, default members (`'fast'`)", "models_ensemble_crossfit", "ensemble"),
    ("MOB", "ensemble with M2TGLGO and TRIPLEX", "models_best_mob", "ensemble_best"),
]


def _rows(stem: str, dataset: str, model: str) -> pd.DataFrame:
    frame = pd.read_csv(RESULTS / f"{stem}.csv")
    rows = frame[(frame["dataset"] == dataset) & (frame["model"] == model) & (frame["target"] == "log1p")]
    if rows.empty:
        raise SystemExit(f"{stem}.csv has no log1p rows of {model!r} on {dataset!r}")
    return rows.set_index("library_id")


def ensemble_table() -> str:
    """PCC(M), PCC(H), MSE and fit time per fold of the ensembles beside ridge and the pixel-reading seed models."""
    lines = [
        "| data set | model | PCC(M) | PCC(H) | MSE | fit s / fold | per held-out section (PCC(M)) | results file |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset, label, stem, model in ENSEMBLE_ROWS:
        rows = _rows(stem, dataset, model)
        sections = ", ".join(f"{lib} {v:.3f}" for lib, v in rows["pcc_m"].items())
        lines.append(
            f"| {dataset} | {label} | {rows['pcc_m'].mean():.3f} | {rows['pcc_h'].mean():.3f} | "
            f"{rows['mse'].mean():.3f} | {rows['fit_s'].mean():.0f} | {sections} | `{stem}.csv` |"
        )
    return "\n".join(lines)


def ensemble_reading() -> str:
    """What the table says against ridge and against the default ensemble, computed (never typed)."""
    out = []
    for dataset in dict.fromkeys(d for d, *_ in ENSEMBLE_ROWS):
        rows = [(label, _rows(stem, d, model)) for d, label, stem, model in ENSEMBLE_ROWS if d == dataset]
        by_label = dict(rows)
        ridge, fast = by_label["ridge"], by_label["ensemble, default members (`'fast'`)"]
        best_label, best = rows[-1]
        singles = [(label, r) for label, r in rows if not label.startswith(("ensemble", "the same"))]
        top_single, top = max(singles, key=lambda item: item[1]["pcc_m"].mean())
        gap = (best["pcc_m"] - ridge["pcc_m"].reindex(best.index)).dropna()
        below = [f"{lib} ({v:+.3f})" for lib, v in gap.items() if v < 0]
        out.append(
            f"- {dataset}: the last row ({best_label}) {best['pcc_m'].mean():.3f} against ridge "
            f"{ridge['pcc_m'].mean():.3f} ({best['pcc_m'].mean() - ridge['pcc_m'].mean():+.3f}; per section "
            f"{gap.min():+.3f} to {gap.max():+.3f}"
            + (f", below ridge on {', '.join(below)}" if below else ", above ridge on every section")
            + f") and the best single model, {top_single}, {top['pcc_m'].mean():.3f}; "
            f"{best['fit_s'].mean() / fast['fit_s'].mean():.1f} times the default ensemble's fit time per fold."
        )
    return "\n".join(out)


TABLES = {
    **{f"superres:{name}": make for name, make in SUPERRES_TABLES.items()},
    "models:ensemble": ensemble_table,
    "models:ensemble-reading": ensemble_reading,
}


def render(text: str) -> str:
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- {re.escape(name)} -->\n)(?:.*?\n)?(<!-- /{re.escape(name)} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"docs/benchmarks.md has no <!-- {name} --> ... <!-- /{name} --> markers")
        table = make()
        text = pattern.sub(lambda m, table=table: m.group(1) + table + "\n" + m.group(2), text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when docs/benchmarks.md differs")
    args = parser.parse_args()
    current = DOCS.read_text()
    rendered = render(current)
    if args.check:
        if rendered != current:
            print("docs/benchmarks.md: generated tables differ from benchmarks/results; run benchmarks/report.py")
            sys.exit(1)
        return
    DOCS.write_text(rendered)


if __name__ == "__main__":
    main()
