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
    assert np.isfinite(scores["pcc_h"].iloc[0])  # the genes the predictions record, chosen on training slides
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
    assert result.returncode == 2  # a usage error, before any slide is read
    assert "Unknown model 'nosuch'" in result.stderr


# The demo's task (python -m stpredict.demo: ridge on handcrafted features, the 100 most expressed training
# genes; here the C4 fold: trained on C2 and C3) as a config file; docs/cli.md shows the same file.
DEMO_CONFIG = """
[features]
method = "handcrafted"

[fit]
model = "ridge"
n_genes = 100
use_rep = "X_handcrafted"

[predict]
key_added = "pred"
"""

# The features step in another process, slowed down on its second slide so that it is killed mid-run.
SLOW_FEATURES = """
import sys, time
import stpredict as st
from stpredict.cli import main

original, calls = st.pp.image_features, []
def slow(adata, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        time.sleep(120)
    return original(adata, **kwargs)
st.pp.image_features = slow
sys.exit(main(sys.argv[1:]))
"""


def test_the_demo_task_from_a_config_file_resumes_after_being_killed(tmp_path, capsys):
    import os
    import signal
    import time

    raw = st.datasets.her2st_crop()
    for name in ("C2", "C3", "C4"):
        raw[raw.obs.library_id == name].copy().write_h5ad(tmp_path / f"{name}.h5ad")
    (tmp_path / "demo.toml").write_text(DEMO_CONFIG)
    (tmp_path / "slow.py").write_text(SLOW_FEATURES)
    config = ["--config", str(tmp_path / "demo.toml")]
    features = ["features", str(tmp_path / "C*.h5ad"), "--out-dir", str(tmp_path / "feats"), *config]
    child = subprocess.Popen([sys.executable, str(tmp_path / "slow.py"), *features], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "feats" / "C2.h5ad").exists() and time.monotonic() < deadline:
            assert child.poll() is None, child.stderr.read().decode()
            time.sleep(0.2)
        time.sleep(1)  # now asleep in the second slide
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate()
    written = sorted(p.name for p in (tmp_path / "feats").iterdir() if p.name != "stpredict_run.json")
    assert written == ["C2.h5ad"]  # no partial file
    finished = (tmp_path / "feats" / "C2.h5ad").stat().st_mtime_ns
    capsys.readouterr()
    assert main(features) == 0  # the rerun resumes
    table = capsys.readouterr().out
    assert table.count("skipped (done before)") == 1 and (tmp_path / "feats" / "C2.h5ad").stat().st_mtime_ns == finished
    assert sorted(p.name for p in (tmp_path / "feats").glob("*.h5ad")) == ["C2.h5ad", "C3.h5ad", "C4.h5ad"]

    feats = tmp_path / "feats"
    assert main(["fit", str(feats / "C2.h5ad"), str(feats / "C3.h5ad"), "--out", str(tmp_path / "m"), *config]) == 0
    assert main(["predict", str(feats / "C4.h5ad"), "--model", str(tmp_path / "m"), "--out-dir",
                 str(tmp_path / "pred"), *config]) == 0  # fmt: skip
    assert (
        main(["evaluate", str(tmp_path / "pred" / "C4.h5ad"), "--key", "pred", "--out", str(tmp_path / "s.csv")]) == 0
    )
    # the demo's own score for C4, from the Python API on the same split
    adata = st.pp.normalize(raw, copy=True)
    st.pp.image_features(adata, show_progress_bar=False)
    with pytest.warns(st.StPredictWarning, match="within-patient"):
        folds = st.tl.make_splits(adata, method="leave_one_slide_out", allow_shared_patients=True)
    demo = st.tl.cross_validate(adata, splits=[f for f in folds if f.test == ["C4"]], model="ridge",
                                use_rep="X_handcrafted", gene_selection={"n_genes": 100})  # fmt: skip
    assert pd.read_csv(tmp_path / "s.csv")["pcc_m"].iloc[0] == pytest.approx(demo["pcc_m"].iloc[0], abs=1e-6)


# --- the everyday path (issue 42) ---------------------------------------------------------------------------


@pytest.fixture
def her2st_layout(tmp_path):
    """The bundled crop's raw files in HER2ST's layout: counts/, spots/, images/ (image names as HER2ST's)."""
    import shutil

    root = tmp_path / "her2st"
    for folder in ("counts", "spots", "images"):
        (root / folder).mkdir(parents=True)
    for section, files in st.datasets.her2st_crop_files().items():
        shutil.copy(files["counts"], root / "counts" / f"{section}.tsv.gz")
        shutil.copy(files["spots"], root / "spots" / f"{section}_selection.tsv")
        shutil.copy(files["image"], root / "images" / f"{section}_5714_HE_BT_X.jpg")
    return root


def test_legacy_st_folders_tables_and_images_are_read(her2st_layout, tmp_path, capsys):
    root = her2st_layout
    config = tmp_path / "c.toml"
    config.write_text('[read]\npatient = "P7"\n[features]\nmethod = "handcrafted"\nshow_progress_bar = false\n')
    assert main(["features", str(root), "--out-dir", str(tmp_path / "f"), "--config", str(config)]) == 0
    written = sorted(p.name for p in (tmp_path / "f").glob("*.h5ad"))
    assert written == ["C2.h5ad", "C3.h5ad", "C4.h5ad"]
    c3 = ad.read_h5ad(tmp_path / "f" / "C3.h5ad")
    expected = st.io.read_st(*st.datasets.her2st_crop_files()["C3"].values(), library_id="C3")
    assert c3.n_obs == expected.n_obs and (c3.obs["patient"] == "P7").all() and "X_handcrafted" in c3.obsm
    # one counts table; an H&E image beside its spot table (image only: no genes)
    from stpredict.cli import read_slide

    assert read_slide(root / "counts" / "C4.tsv.gz", {}).n_obs == 70
    he_only = read_slide(root / "images" / "C4_5714_HE_BT_X.jpg", {})
    assert he_only.n_vars == 0 and he_only.n_obs > 0 and he_only.obs["library_id"].iloc[0] == "C4"
    # a plain image without spot positions: exit 2 before any work, with the way out
    lone = tmp_path / "lone.jpg"
    lone.write_bytes((root / "images" / "C2_5714_HE_BT_X.jpg").read_bytes())
    capsys.readouterr()
    assert main(["features", str(lone), str(root), "--out-dir", str(tmp_path / "g")]) == 2
    assert "write_pyramidal_tiff" in capsys.readouterr().err and not (tmp_path / "g").exists()


def test_resume_redoes_nothing_silently_when_settings_change(slides, capsys):
    d = slides
    (d / "a.toml").write_text('[features]\nmethod = "handcrafted"\nsize = 224\n')
    (d / "b.toml").write_text('[features]\nmethod = "handcrafted"\nsize = 112\n')
    run = ["features", str(d / "C2.h5ad"), "--out-dir", str(d / "f")]
    assert main([*run, "--config", str(d / "a.toml")]) == 0
    before = (d / "f" / "C2.h5ad").stat().st_mtime_ns
    capsys.readouterr()
    assert main([*run, "--config", str(d / "b.toml")]) == 2  # stale outputs are never reported as done
    err = capsys.readouterr().err
    assert "[features] size: 224 -> 112" in err and "--overwrite" in err
    assert (d / "f" / "C2.h5ad").stat().st_mtime_ns == before
    assert main([*run, "--config", str(d / "a.toml")]) == 0  # unchanged settings: skipped
    assert "skipped (done before)" in capsys.readouterr().out
    assert main([*run, "--config", str(d / "b.toml"), "--overwrite"]) == 0
    assert (d / "f" / "C2.h5ad").stat().st_mtime_ns != before


@pytest.mark.parametrize(
    ("config", "step", "message"),
    [
        ("[fit]\nmodle = 'ridge'\n", "fit", "[fit] has no key 'modle'. Did you mean 'model'?"),
        ("[features]\nmethdo = 'handcrafted'\n", "features", "Did you mean 'method'?"),
        ("[read]\npatinet = 'P1'\n", "features", "[read] has no key 'patinet'. Did you mean 'patient'?"),
        ("[fit]\nmodel = 'ridgee'\n", "fit", "Unknown model 'ridgee'. Did you mean 'ridge'?"),
        ("[fit]\nmodel = 'mlp'\nmodel_params = { hiden = [8] }\n", "fit", "model_params for 'mlp'"),
    ],
)
def test_configuration_mistakes_stop_before_any_work(slides, capsys, config, step, message):
    (slides / "c.toml").write_text(config)
    target = ["--out", str(slides / "m")] if step == "fit" else ["--out-dir", str(slides / "o")]
    assert main([step, str(slides / "C2.h5ad"), *target, "--config", str(slides / "c.toml")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (slides / "m").exists() and not (slides / "o").exists()


def test_an_unreadable_format_is_a_usage_error(slides, capsys):
    (slides / "notes.docx").write_text("not a slide")
    assert main(["features", str(slides / "C2.h5ad"), str(slides / "notes.docx"), "--out-dir", str(slides / "o")]) == 2
    assert "Cannot tell how to read" in capsys.readouterr().err and not (slides / "o").exists()


# The features step in another process, slow on its second slide; the test interrupts it there.
SLOW_SECOND = """
import sys, time
import stpredict as st
from stpredict.cli import main

original, calls = st.pp.image_features, []
def slow(adata, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        print("SECOND", file=sys.stderr, flush=True)
        time.sleep(120)
    return original(adata, **kwargs)
st.pp.image_features = slow
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("signum", "status", "cause"), [(2, 130, "Ctrl-C"), (15, 143, "SIGTERM")])
def test_interrupts_print_what_finished_and_exit_130_or_143(slides, signum, status, cause):
    import os
    import time

    (slides / "slow.py").write_text(SLOW_SECOND)
    args = ["features", str(slides / "C2.h5ad"), str(slides / "C3.h5ad"), "--out-dir", str(slides / "f")]
    child = subprocess.Popen([sys.executable, str(slides / "slow.py"), *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (slides / "f" / "C2.h5ad").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # asleep in the second slide
        os.kill(child.pid, signum)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == status, err
    assert f"interrupted ({cause}); 1 slide(s) finished" in err and "Traceback" not in err
    assert "done" in out and "not run (interrupted)" in out
