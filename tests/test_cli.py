"""The ``stpredict`` command line: features, fit, predict, evaluate over many slides, resumable."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import stpredict as st
from stpredict.cli import main

CONFIG = """
[features]
method = "handcrafted"

[fit]
model = "ridge"
n_genes = 30
use_rep = "X_handcrafted"

[predict]
key_added = "pred"
"""


@pytest.fixture
def slides(tmp_path, crop):
    for name in ("C2", "C3", "C4"):
        crop[crop.obs.library_id == name].copy().write_h5ad(tmp_path / f"{name}.h5ad")
    (tmp_path / "run.toml").write_text(CONFIG)
    return tmp_path


def test_features_fit_predict_evaluate_from_the_shell(slides, capsys):
    d = slides
    config = ["--config", str(d / "run.toml")]
    assert main(["features", str(d / "C*.h5ad"), "--out-dir", str(d / "feats"), *config]) == 0
    written = ad.read_h5ad(d / "feats" / "C2.h5ad")
    assert written.obsm["X_handcrafted"].shape == (72, 44) and "log1p" in written.layers
    code = main(["fit", str(d / "feats" / "C2.h5ad"), str(d / "feats" / "C3.h5ad"), "--out", str(d / "m.stpredict"),
                 "--calibrate", "2", *config])  # fmt: skip
    assert code == 0
    predictor = st.tl.load_model(d / "m.stpredict")
    assert len(predictor.genes) == 30 and predictor.train_slides == ["C2", "C3"] and predictor.calibration is not None
    image_only = ad.read_h5ad(d / "feats" / "C4.h5ad")[:, []].copy()  # H&E alone
    image_only.write_h5ad(d / "C4_he.h5ad")
    assert main(["predict", str(d / "C4_he.h5ad"), "--model", str(d / "m.stpredict"), "--out-dir", str(d / "p"),
                 "--interval", "0.9", *config]) == 0  # fmt: skip
    predicted = ad.read_h5ad(d / "p" / "C4_he.h5ad")
    assert predicted.obsm["pred"].shape == (70, 30) and "pred_upper" in predicted.obsm
    # the same predictions as the Python API
    expected = predictor.predict(image_only.copy(), copy=True, key_added="pred").obsm["pred"]
    np.testing.assert_allclose(predicted.obsm["pred"].to_numpy(), expected.to_numpy(), rtol=1e-6)
    # evaluate slides that were measured: predictions on C4 with its genes
    assert main(["predict", str(d / "feats" / "C4.h5ad"), "--model", str(d / "m.stpredict"), "--out-dir",
                 str(d / "q"), *config]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", str(d / "q" / "*.h5ad"), "--key", "pred", "--out", str(d / "scores.csv")]) == 0
    scores = pd.read_csv(d / "scores.csv")
    truth = st.tl.evaluate(ad.read_h5ad(d / "q" / "C4.h5ad"), layer_pred="pred", inplace=False)
    assert scores["pcc_m"].iloc[0] == pytest.approx(truth["pearson"].mean())
    assert "pcc_m" in capsys.readouterr().out


def test_predict_resumes_and_reports_failed_slides(slides, capsys):
    d = slides
    predictor = st.tl.fit(st.pp.normalize(ad.read_h5ad(d / "C2.h5ad"), copy=True), genes=["ERBB2", "GNAS"])
    predictor.save(d / "m.stpredict")
    (d / "broken.h5ad").write_text("not an AnnData file")
    args = ["predict", str(d / "C3.h5ad"), str(d / "broken.h5ad"), "--model", str(d / "m.stpredict"),
            "--out-dir", str(d / "out")]  # fmt: skip
    assert main(args) == 1  # one slide failed: the other is written
    assert (d / "out" / "C3.h5ad").is_file() and not (d / "out" / "broken.h5ad").exists()
    table = capsys.readouterr().out
    assert "failed: OSError" in table
    (d / "broken.h5ad").unlink()
    args.remove(str(d / "broken.h5ad"))
    before = (d / "out" / "C3.h5ad").stat().st_mtime_ns
    assert main(args) == 0
    assert "skipped (done before)" in capsys.readouterr().out
    assert (d / "out" / "C3.h5ad").stat().st_mtime_ns == before  # not redone
    assert main([*args, "--overwrite"]) == 0
    assert (d / "out" / "C3.h5ad").stat().st_mtime_ns != before


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        ("[fitt]\nmodel = 'ridge'\n", ["fit", "{d}/C2.h5ad", "--out", "{d}/m"], "unknown table"),
        ("[fit\n", ["fit", "{d}/C2.h5ad", "--out", "{d}/m"], "Could not parse"),
        ("", ["predict", "{d}/nothing*.h5ad", "--model", "{d}/m", "--out-dir", "{d}/o"], "No slide matches"),
        ("", ["predict", "{d}/C2.h5ad", "--model", "{d}/none.stpredict", "--out-dir", "{d}/o"], "No model file"),
    ],
)
def test_usage_errors_stop_before_any_work_with_status_2(slides, capsys, config, args, message):
    (slides / "c.toml").write_text(config)
    argv = [a.format(d=slides) for a in args] + ["--config", str(slides / "c.toml")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_yaml_config_and_the_installed_console_script(slides):
    (slides / "run.yaml").write_text("fit:\n  model: nosuch\n")
    result = subprocess.run(
        [sys.executable, "-m", "stpredict.cli", "fit", str(slides / "C2.h5ad"), "--out", str(slides / "m"),
         "--config", str(slides / "run.yaml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Unknown model 'nosuch'" in result.stderr
