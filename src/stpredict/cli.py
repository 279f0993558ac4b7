"""``stpredict``: image features, training, prediction and evaluation over many slides, from a shell.

::

    stpredict features data/*.h5ad --out-dir features/ --config run.toml
    stpredict fit features/*.h5ad --out model.stpredict --config run.toml
    stpredict predict 'scans/*.svs' --model model.stpredict --out-dir predictions/ --interval 0.9
    stpredict evaluate predictions/*.h5ad --key pred --out scores.csv

Slides are ``.h5ad`` files (as any ``st.io`` reader returns them, saved with ``write_h5ad``), Space Ranger
``outs`` folders (Visium; Visium HD when they hold ``binned_outputs/``), Xenium and CosMx output folders
(``[read]`` gives ``he_image`` and ``alignment``), SpatialData ``.zarr`` stores, legacy Spatial
Transcriptomics (a counts table with its spot table and H&E, a folder of them, or HER2ST's ``counts/``,
``spots/``, ``images/``), or whole-slide images (``.svs``, ``.ndpi``, pyramidal ``.tif``, ...: virtual spots,
for ``predict``). Glob patterns are expanded here, so they may be quoted. A configuration file (TOML, or
YAML) holds the same keys as the Python API, one table per step: ``[read]`` (``bin_size``, ``patient``,
``spot_diameter_um`` ...), ``[features]`` (``st.pp.image_features``), ``[fit]`` (``st.tl.fit``: ``model``,
``genes``, ``n_genes``, ``layer``, ``use_rep``, ``model_params``, ``calibrate`` ...), ``[predict]``
(``interval``, ``key_added`` ...); flags given on the command line win. Every key is checked before any work.

Every slide is written as soon as it is done, with the settings that made it (``stpredict_run.json`` in the
output folder); a slide whose output exists with the same settings is skipped (``--overwrite`` redoes it),
so an interrupted run resumes where it stopped, and changed settings stop the run naming the change. Exit
status: 0 when every slide succeeded, 1 when some failed (the others are written; the summary table lists
the errors), 2 for a usage or configuration error, which stops before any work, 130 / 143 when interrupted
(Ctrl-C / SIGTERM; the summary lists what finished).
"""

from __future__ import annotations

import argparse
import glob
import signal
import sys
import time
import tomllib
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ._cli_config import RunRecord, check_model, check_tables, file_checksum
from ._cli_slides import Slide, UsageError, read, slide_name, slides_at

#: configuration tables, one per step (and [read] for all)
SECTIONS = ("read", "features", "fit", "predict", "evaluate")
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM, as shells report them

__all__ = ["UsageError", "main", "read_slide", "slide_name"]


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM during a run: what finished is summarised, then the run stops."""

    def __init__(self, status: int, table: pd.DataFrame | None = None) -> None:
        super().__init__(status)
        self.status, self.table = status, table


# --- configuration and slides ----------------------------------------------------------------------------


def read_config(path: str | None) -> dict[str, dict[str, Any]]:
    """The configuration file's tables (``{}`` without a file); unknown tables and keys are an error."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"No configuration file {str(file)!r}.")
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            config = yaml.safe_load(file.read_text()) or {}
        else:
            config = tomllib.loads(file.read_text())
    except Exception as err:  # noqa: BLE001 - any parse error becomes a usage error naming the file
        raise UsageError(f"Could not parse {str(file)!r}: {err}") from err
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise UsageError(f"{str(file)!r}: unknown table(s) {unknown}; the tables are {list(SECTIONS)}.")
    tables = {name: dict(config.get(name) or {}) for name in SECTIONS}
    check_tables(tables, repr(str(file)))
    return tables


def expand(patterns: Sequence[str]) -> list[Slide]:
    """The slides: each argument a path or a glob pattern.

    A pattern matching nothing, or a path no reader fits, is an error before any work.
    """
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise UsageError(f"No slide matches {pattern!r}.")
        paths += [Path(m) for m in matches]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"No such slide(s): {missing[:5]}.")
    slides = [slide for path in paths for slide in slides_at(path)]
    names = pd.Series([s.name for s in slides])
    if names.duplicated().any():
        raise UsageError(f"Several slides would write the same output name {sorted(set(names[names.duplicated()]))}.")
    return slides


def read_slide(path: str | Path, options: dict[str, Any]) -> Any:
    """The one slide at ``path`` as AnnData, read as the command line reads it (``options``: a ``[read]`` table)."""
    slides = slides_at(Path(path))
    if len(slides) != 1:
        raise UsageError(f"{str(path)!r} holds {len(slides)} slides; read them one at a time.")
    return read(slides[0], options)


def write_slide(adata, path: Path, fmt: str, key: str | None = None) -> None:
    """Write one result as ``.h5ad`` or a SpatialData Zarr store, atomically enough to resume on."""
    from ._files import atomic_path

    if fmt == "zarr":
        import stpredict as st

        sdata = st.io.to_spatialdata(adata, key=key)
        tmp = path.with_name(path.name + ".partial")
        sdata.write(tmp, overwrite=True)
        tmp.rename(path)
        return
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)


# --- steps -----------------------------------------------------------------------------------------------


def _per_slide(
    slides: list[Slide], out_dir: Path, suffix: str, overwrite: bool, settings: dict, work: Callable
) -> pd.DataFrame:
    """Run ``work(slide, output)`` for every slide not done yet with these ``settings``; one summary row each.

    Before any work: a slide written before with other settings stops the run (exit 2) naming the change.
    """
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    record = RunRecord(out_dir)
    outputs = [out_dir / f"{slide.name}{suffix}" for slide in slides]
    if not overwrite:
        for output in outputs:
            changes = record.differences(output, settings) if output.exists() else []
            if changes:
                raise UsageError(
                    f"{str(output)!r} was made with other settings ({'; '.join(changes[:4])}): pass --overwrite to "
                    "redo the slides, or write to another --out-dir."
                )
    rows = []
    try:
        for slide, output in tqdm(list(zip(slides, outputs, strict=True)), desc="slides", unit="slide"):
            if output.exists() and not overwrite:
                known = record.differences(output, settings) is not None
                status = "skipped (done before)" if known else "skipped (done before; settings not recorded)"
                rows.append({"slide": str(slide.path), "output": str(output), "status": status})
                continue
            started = time.perf_counter()
            try:
                extra = work(slide, output) or {}
                record.write(output, settings)
                status = "done"
            except Exception as err:  # noqa: BLE001 - one slide's failure must not stop the others
                extra, status = {}, f"failed: {type(err).__name__}: {err}"
                traceback.print_exc(file=sys.stderr)
            rows.append(
                {"slide": str(slide.path), "output": str(output), "status": status,
                 "seconds": time.perf_counter() - started} | extra
            )  # fmt: skip
    except (KeyboardInterrupt, Interrupted) as stop:
        done = {row["slide"] for row in rows}
        rows += [{"slide": str(s.path), "output": str(o), "status": "not run (interrupted)"}
                 for s, o in zip(slides, outputs, strict=True) if str(s.path) not in done]  # fmt: skip
        status = stop.status if isinstance(stop, Interrupted) else EXIT_INTERRUPTED
        raise Interrupted(status, pd.DataFrame(rows)) from None
    return pd.DataFrame(rows)


def _prepare_expression(adata, layer: str | None) -> None:
    """``layers[layer]`` from the counts when a slide has genes but not that layer yet (``log1p`` only)."""
    import stpredict as st

    if adata.n_vars and layer == "log1p" and "log1p" not in adata.layers:
        st.pp.normalize(adata)


def features(args: argparse.Namespace, config: dict) -> pd.DataFrame:
    """``stpredict features``: each slide read, normalised when it has counts, its image features written."""
    import stpredict as st

    options = config.get("features", {})
    settings = {"read": config.get("read", {}), "features": options}

    def work(slide: Slide, output: Path) -> dict:
        adata = read(slide, config.get("read", {}))
        _prepare_expression(adata, "log1p")
        st.pp.image_features(adata, **options)
        write_slide(adata, output, "h5ad")
        return {"spots": adata.n_obs}

    return _per_slide(expand(args.slides), Path(args.out_dir), ".h5ad", args.overwrite, settings, work)


def fit(args: argparse.Namespace, config: dict) -> pd.DataFrame:
    """``stpredict fit``: one model trained on all the slides given (concatenated), saved to ``--out``."""
    import stpredict as st

    options = dict(config.get("fit", {}))
    for flag in ("model", "calibrate"):
        if getattr(args, flag) is not None:
            options[flag] = getattr(args, flag)
    check_model(options)
    n_genes = options.pop("n_genes", None)
    paths = expand(args.slides)
    slides = []
    for slide in paths:  # each slide normalised on all its genes, as `features` and the Python API do
        adata = read(slide, config.get("read", {}))
        _prepare_expression(adata, options.get("layer", "log1p"))
        slides.append(adata)
    train = slides[0] if len(slides) == 1 else st.io.concat(slides)
    if n_genes is not None and "genes" not in options:
        st.pp.select_genes(train, n_genes=int(n_genes))
    started = time.perf_counter()
    predictor = st.tl.fit(train, **options)
    predictor.save(args.out)
    print(predictor, file=sys.stderr)
    return pd.DataFrame(
        [
            {
                "model": predictor.model_name,
                "slides": len(predictor.train_slides),
                "spots": predictor.n_train_spots,
                "genes": len(predictor.genes),
                "validation_pcc": round(predictor.validation.score, 4),
                "seconds": time.perf_counter() - started,
                "output": str(args.out),
                "status": "done",
            }
        ]
    )


def predict(args: argparse.Namespace, config: dict) -> pd.DataFrame:
    """``stpredict predict``: every slide predicted by a saved model and written, one at a time."""
    import stpredict as st

    options = dict(config.get("predict", {}))
    if args.interval is not None:
        options["interval"] = args.interval
    key = options.setdefault("key_added", "pred")
    paths = expand(args.slides)
    model_path = Path(args.model)
    if not model_path.is_file():
        raise UsageError(f"No model file {str(model_path)!r}; train one with `stpredict fit`.")
    predictor = st.tl.load_model(model_path)
    fmt = args.format
    options.setdefault("show_progress_bar", True)
    settings = {"read": config.get("read", {}), "predict": options, "model": file_checksum(model_path), "format": fmt}

    def work(slide: Slide, output: Path) -> dict:
        adata = read(slide, config.get("read", {}))
        predictor.predict(adata, **options)
        write_slide(adata, output, fmt, key)
        ood = adata.uns[key].get("ood", {}).get("slides", {})
        return {"spots": adata.n_obs, "ood_score": max(ood.values()) if ood else float("nan")}

    suffix = ".zarr" if fmt == "zarr" else ".h5ad"
    return _per_slide(paths, Path(args.out_dir), suffix, args.overwrite, settings, work)


def evaluate(args: argparse.Namespace, config: dict) -> pd.DataFrame:
    """``stpredict evaluate``: per slide, predictions scored against measured expression."""
    import anndata as ad

    import stpredict as st

    options = {"layer_true": "log1p"} | config.get("evaluate", {})
    rows = []
    for slide in expand(args.slides):
        path = slide.path
        adata = ad.read_h5ad(path)
        _prepare_expression(adata, options["layer_true"])
        table = st.tl.evaluate(adata, layer_pred=args.key, inplace=False, **options)
        chosen = options.get("highly_predictive")  # else those the predictions record (training slides' choice)
        chosen = chosen if chosen is not None else (adata.uns.get(args.key) or {}).get("highly_predictive")
        summary = st.tl.summarize(table, None if chosen is None else list(chosen))
        rows += [{"file": str(path), **row, "status": "done"} for row in summary.to_dict("records")]
    result = pd.DataFrame(rows)
    if args.out:
        result.to_csv(args.out, index=False)
    _explain_scores(result)
    return result


def _explain_scores(table: pd.DataFrame) -> None:
    """Say why PCC(H) is missing and what a negative R² means, under the table (standard error)."""
    if "pcc_h" in table and table["pcc_h"].isna().all():
        print("pcc_h is NaN: the predictions record no highly predictive genes (predicted before they were "
              "recorded); give them as [evaluate] highly_predictive = [...] (Predictor.highly_predictive()).",
              file=sys.stderr)  # fmt: skip
    if "r2" in table and (table["r2"] < 0).any():
        print("r2 < 0: the predictions are farther from the measured values than each gene's own mean on that "
              "slide is (often a shift of level between slides); pcc_m, a correlation, is blind to such shifts.",
              file=sys.stderr)  # fmt: skip


# --- entry point -----------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    """The argument parser of the four steps."""
    top = argparse.ArgumentParser(prog="stpredict", description=__doc__.splitlines()[0])
    top.add_argument("--version", action="version", version=_version())
    steps = top.add_subparsers(dest="step", required=True, metavar="{features,fit,predict,evaluate}")

    def step(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = steps.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("slides", nargs="+", help="slide files or folders, or glob patterns")
        sub.add_argument("--config", help="TOML or YAML file with [read]/[features]/[fit]/[predict] tables")
        return sub

    sub = step("features", "compute image features of every slide and write it as .h5ad")
    sub.add_argument("--out-dir", required=True)
    sub.add_argument("--overwrite", action="store_true", help="redo slides whose output exists")
    sub = step("fit", "train one model on all the slides given and save it")
    sub.add_argument("--out", required=True, help="model file to write (e.g. model.stpredict)")
    sub.add_argument("--model", help="registered model (default: the config's, else ridge)")
    sub.add_argument("--calibrate", type=int, help="folds of training groups for prediction intervals (e.g. 3)")
    sub = step("predict", "predict every slide with a saved model; H&E alone suffices")
    sub.add_argument("--model", required=True, help="a file written by `stpredict fit` or Predictor.save")
    sub.add_argument("--out-dir", required=True)
    sub.add_argument("--format", choices=["h5ad", "zarr"], default="h5ad", help="h5ad, or a SpatialData Zarr store")
    sub.add_argument("--interval", type=float, help="also write prediction intervals of this coverage (e.g. 0.9)")
    sub.add_argument("--overwrite", action="store_true", help="redo slides whose output exists")
    sub = step("evaluate", "score predictions against measured expression; one row per slide")
    sub.add_argument("--key", default="pred", help="predictions key (predict's key_added)")
    sub.add_argument("--out", help="CSV file for the table")
    return top


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stpredict")
    except PackageNotFoundError:
        return "unknown"


STEPS = {"features": features, "fit": fit, "predict": predict, "evaluate": evaluate}


def _stop_on_sigterm(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise Interrupted(EXIT_TERMINATED)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step; prints the summary table to stdout and returns the exit status."""
    args = parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm) if _main_thread() else None
    try:
        config = read_config(args.config)
        table = STEPS[args.step](args, config)
    except UsageError as err:
        print(f"stpredict {args.step}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, Interrupted) as stop:
        status = stop.status if isinstance(stop, Interrupted) else EXIT_INTERRUPTED
        table = getattr(stop, "table", None)
        cause = "SIGTERM" if status == EXIT_TERMINATED else "Ctrl-C"
        finished = "" if table is None else f"; {int((table['status'] == 'done').sum())} slide(s) finished and written"
        print(f"stpredict {args.step}: interrupted ({cause}){finished}. Rerun the same command to resume.",
              file=sys.stderr)  # fmt: skip
        if table is not None:
            _print_table(table)
        return status
    except (ValueError, KeyError, FileNotFoundError, TypeError) as err:  # fit/evaluate: one unit of work
        print(f"stpredict {args.step} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_SOME_FAILED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    _print_table(table)
    failed = table["status"].astype(str).str.startswith("failed").any()
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _print_table(table: pd.DataFrame) -> None:
    pd.set_option("display.width", 160)
    pd.set_option("display.max_colwidth", 80)
    print(table.to_string(index=False))


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
