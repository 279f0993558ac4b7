"""``stpredict``: image features, training, prediction and evaluation over many slides, from a shell.

::

    stpredict features data/*.h5ad --out-dir features/ --config run.toml
    stpredict fit features/*.h5ad --out model.stpredict --config run.toml
    stpredict predict 'scans/*.svs' --model model.stpredict --out-dir predictions/ --interval 0.9
    stpredict evaluate predictions/*.h5ad --key pred --out scores.csv

Slides are ``.h5ad`` files (as any ``st.io`` reader returns them, saved with ``write_h5ad``), Space Ranger
``outs`` folders (Visium; Visium HD when they hold ``binned_outputs/``), Xenium output folders (``[read]``
gives ``he_image`` and ``alignment``), SpatialData ``.zarr`` stores, or
whole-slide images (``.svs``, ``.ndpi``, pyramidal ``.tif``, ...: virtual spots, for ``predict``). Glob
patterns are expanded here, so they may be quoted. A configuration file (TOML, or YAML) holds the same keys
as the Python API, one table per step: ``[read]`` (``bin_size``, ``patient``, ``spot_diameter_um`` ...),
``[features]`` (``st.pp.image_features``), ``[fit]`` (``st.tl.fit``: ``model``, ``genes``, ``n_genes``,
``layer``, ``use_rep``, ``model_params``, ``calibrate`` ...), ``[predict]`` (``interval``, ``key_added`` ...);
flags given on the command line win.

Every slide is written as soon as it is done, and a slide whose output exists is skipped (``--overwrite``
redoes it), so an interrupted run resumes where it stopped. Exit status: 0 when every slide succeeded,
1 when some failed (the others are written; the summary table lists the errors), 2 for a usage or
configuration error, which stops before any work.
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
import tomllib
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

#: configuration tables and the keys each accepts besides those of the function it feeds
SECTIONS = ("read", "features", "fit", "predict", "evaluate")
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command line or configuration problem: reported without a traceback, exit status 2."""


# --- configuration and slides ----------------------------------------------------------------------------


def read_config(path: str | None) -> dict[str, dict[str, Any]]:
    """The configuration file's tables (``{}`` without a file); unknown tables are an error."""
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
    return {name: dict(config.get(name) or {}) for name in SECTIONS}


def expand(patterns: Sequence[str]) -> list[Path]:
    """Paths of the slides: each argument a path or a glob pattern; a pattern matching nothing is an error."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise UsageError(f"No slide matches {pattern!r}.")
        paths += [Path(m) for m in matches]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"No such slide(s): {missing[:5]}.")
    return paths


def slide_name(path: Path) -> str:
    """The output name of a slide: its file name without suffix (a Space Ranger ``outs`` folder: its run)."""
    if path.name == "outs":
        return path.parent.name
    return path.name.removesuffix(".zarr").split(".")[0] if path.suffix else path.name


def read_slide(path: Path, options: dict[str, Any]) -> Any:
    """The slide at ``path`` as AnnData, with the reader its format needs (``options``: the ``[read]`` table)."""
    import anndata as ad

    import stpredict as st

    name = {"library_id": options.get("library_id", slide_name(path))}
    if path.suffix == ".h5ad":
        return ad.read_h5ad(path)
    if path.suffix == ".zarr":
        return st.io.read_spatialdata(path, **_known(st.io.read_spatialdata, options), **name)
    if path.is_dir():
        if (path / "transcripts.parquet").is_file():  # Xenium: [read] gives he_image and alignment
            return st.io.read_xenium(path, **_known(st.io.read_xenium, options), **name)
        if any(path.glob("*tx_file.csv*")):  # CosMx flat files: [read] gives he_image and alignment
            return st.io.read_cosmx(path, **_known(st.io.read_cosmx, options), **name)
        if (path / "binned_outputs").is_dir():
            return st.io.read_visium_hd(path, **_known(st.io.read_visium_hd, options), **name)
        return st.io.read_visium(path, **_known(st.io.read_visium, options), **name)
    if st.io.is_wsi(path):
        return st.io.read_wsi(path, **_known(st.io.read_wsi, options), **name)
    raise UsageError(
        f"Cannot tell how to read {str(path)!r}: pass .h5ad files, Space Ranger 'outs' folders, SpatialData .zarr "
        "stores or whole-slide images."
    )


def _known(function: Callable, options: dict[str, Any]) -> dict[str, Any]:
    """The ``[read]`` options ``function`` accepts (each reader takes its own subset)."""
    import inspect

    accepted = set(inspect.signature(function).parameters) - {"library_id"}
    return {k: v for k, v in options.items() if k in accepted}


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


def _per_slide(paths: list[Path], out_dir: Path, suffix: str, overwrite: bool, work: Callable) -> pd.DataFrame:
    """Run ``work(path, output)`` for every slide not done yet; one summary row per slide."""
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in tqdm(paths, desc="slides", unit="slide", disable=len(paths) < 2):
        output = out_dir / f"{slide_name(path)}{suffix}"
        if output.exists() and not overwrite:
            rows.append({"slide": str(path), "output": str(output), "status": "skipped (done before)"})
            continue
        started = time.perf_counter()
        try:
            extra = work(path, output) or {}
            status = "done"
        except Exception as err:  # noqa: BLE001 - one slide's failure must not stop the others
            extra, status = {}, f"failed: {type(err).__name__}: {err}"
            traceback.print_exc(file=sys.stderr)
        rows.append(
            {"slide": str(path), "output": str(output), "status": status, "seconds": time.perf_counter() - started}
            | extra
        )
    return pd.DataFrame(rows)


def _prepare_expression(adata, layer: str | None) -> None:
    """``layers[layer]`` from the counts when a slide has genes but not that layer yet (``log1p`` only)."""
    import stpredict as st

    if adata.n_vars and layer == "log1p" and "log1p" not in adata.layers:
        st.pp.normalize(adata)


def features(args: argparse.Namespace, config: dict) -> pd.DataFrame:
    """``stpredict features``: each slide read, normalised when it has counts, its image features written."""
    import stpredict as st

    options = {"show_progress_bar": False} | config.get("features", {})

    def work(path: Path, output: Path) -> dict:
        adata = read_slide(path, config.get("read", {}))
        _prepare_expression(adata, "log1p")
        st.pp.image_features(adata, **options)
        write_slide(adata, output, "h5ad")
        return {"spots": adata.n_obs}

    return _per_slide(expand(args.slides), Path(args.out_dir), ".h5ad", args.overwrite, work)


def fit(args: argparse.Namespace, config: dict) -> pd.DataFrame:
    """``stpredict fit``: one model trained on all the slides given (concatenated), saved to ``--out``."""
    import stpredict as st

    options = dict(config.get("fit", {}))
    for flag in ("model", "calibrate"):
        if getattr(args, flag) is not None:
            options[flag] = getattr(args, flag)
    n_genes = options.pop("n_genes", None)
    slides = [read_slide(p, config.get("read", {})) for p in expand(args.slides)]
    train = slides[0] if len(slides) == 1 else st.io.concat(slides)
    _prepare_expression(train, options.get("layer", "log1p"))
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

    def work(path: Path, output: Path) -> dict:
        adata = read_slide(path, config.get("read", {}))
        predictor.predict(adata, **options)
        write_slide(adata, output, fmt, key)
        ood = adata.uns[key].get("ood", {}).get("slides", {})
        return {"spots": adata.n_obs, "ood_score": max(ood.values()) if ood else float("nan")}

    suffix = ".zarr" if fmt == "zarr" else ".h5ad"
    return _per_slide(paths, Path(args.out_dir), suffix, args.overwrite, work)


def evaluate(args: argparse.Namespace, config: dict) -> pd.DataFrame:
    """``stpredict evaluate``: per slide, predictions scored against measured expression."""
    import anndata as ad

    import stpredict as st

    options = {"layer_true": "log1p"} | config.get("evaluate", {})
    rows = []
    for path in expand(args.slides):
        adata = ad.read_h5ad(path)
        _prepare_expression(adata, options["layer_true"])
        table = st.tl.evaluate(adata, layer_pred=args.key, inplace=False, **options)
        rows += [{"file": str(path), **row, "status": "done"} for row in st.tl.summarize(table).to_dict("records")]
    result = pd.DataFrame(rows)
    if args.out:
        result.to_csv(args.out, index=False)
    return result


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step; prints the summary table to stdout and returns the exit status."""
    args = parser().parse_args(argv)
    try:
        config = read_config(args.config)
        table = STEPS[args.step](args, config)
    except UsageError as err:
        print(f"stpredict {args.step}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, KeyError, FileNotFoundError, TypeError) as err:  # fit/evaluate: one unit of work
        print(f"stpredict {args.step} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_SOME_FAILED
    pd.set_option("display.width", 160)
    pd.set_option("display.max_colwidth", 80)
    print(table.to_string(index=False))
    failed = table["status"].astype(str).str.startswith("failed").any()
    return EXIT_SOME_FAILED if failed else EXIT_OK


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
