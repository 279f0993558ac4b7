"""Saving, loading and applying fitted models."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import stpredict as st

GENES = ["ERBB2", "GNAS", "FASN"]


@pytest.fixture(scope="module")
def fitted(_crop_norm_session):
    adata = _crop_norm_session
    train = adata[adata.obs.library_id != "C4"].copy()
    test = adata[adata.obs.library_id == "C4"].copy()
    return st.tl.fit(train, genes=GENES), train, test


class _Bomb:
    """Unpickling this would create a file: the loader must never get that far."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_file_is_refused_without_running_it(tmp_path):
    victim = tmp_path / "created_by_unpickling"
    crafted = tmp_path / "model.stpredict"
    crafted.write_bytes(pickle.dumps({"state": _Bomb(str(victim))}))
    with pytest.raises(ValueError, match="never unpickles"):
        st.tl.load_model(crafted)
    assert not victim.exists()
    # the payload is live: unpickling it would have created the file
    pickle.loads(crafted.read_bytes()).get("state").close()
    assert victim.exists()


def test_newer_or_foreign_formats_are_refused(fitted, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    predictor, _, _ = fitted
    path = predictor.save(tmp_path / "m.stpredict")
    with safe_open(str(path), framework="np") as handle:
        meta = handle.metadata()
        arrays = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    save_file(arrays, str(tmp_path / "newer"), metadata={**meta, "format_version": "99"})
    with pytest.raises(ValueError, match="newer than this stpredict reads"):
        st.tl.load_model(tmp_path / "newer")
    save_file(arrays, str(tmp_path / "foreign"), metadata={"format": "something-else"})
    with pytest.raises(ValueError, match="not an stpredict model"):
        st.tl.load_model(tmp_path / "foreign")
    with pytest.raises(FileNotFoundError):
        st.tl.load_model(tmp_path / "missing")


def test_saved_metadata_is_plain_json(fitted, tmp_path):
    from safetensors import safe_open

    predictor, _, _ = fitted
    path = predictor.save(tmp_path / "m.stpredict")
    with safe_open(str(path), framework="np") as handle:
        meta = json.loads(handle.metadata()["meta"])
    assert meta["genes"] == GENES and meta["use_rep"] == "X_handcrafted"
    assert meta["rep_recipe"]["method"] == "handcrafted" and meta["rep_recipe"]["size"] == 224
    assert meta["train_slides"] == ["C2", "C3"] and meta["train_patients"] == ["C"]
    assert meta["target"]["layer"] == "log1p" and "normalize" in meta["target"]
    assert meta["validation"]["groups"] == "slide" and "alpha" in meta["validation"]["selected"]
    assert "stpredict" in meta["versions"] and meta["timings"]["fit_s"] > 0


def test_representation_width_and_recipe_are_checked(fitted):
    predictor, _, test = fitted
    narrow = test.copy()
    narrow.obsm["X_handcrafted"] = narrow.obsm["X_handcrafted"][:, :10]
    narrow.uns.pop("stpredict_features", None)
    with pytest.raises(ValueError, match="has 10 features but the model was trained on 44"):
        predictor.predict(narrow)
    other = test.copy()
    other.uns["stpredict_features"]["X_handcrafted"] = {**other.uns["stpredict_features"]["X_handcrafted"], "size": 112}
    with pytest.raises(ValueError, match="computed differently.*size: slide 112 vs model 224"):
        predictor.predict(other)


def test_predict_writes_outputs_and_warns_on_training_slides(fitted):
    predictor, train, test = fitted
    out = st.tl.predict(predictor, test, key_added="p", copy=True, full_layer=True)
    assert "p" not in test.obsm and "p" not in test.layers
    idx = out.var_names.get_indexer(GENES)
    np.testing.assert_allclose(out.layers["p"][:, idx], out.obsm["p"].to_numpy())
    assert np.isnan(np.delete(out.layers["p"], idx, axis=1)).all()
    info = out.uns["p"]
    assert info["model"] == "ridge" and info["train_slides"] == ["C2", "C3"] and info["genes"] == GENES
    assert info["validation"]["selected"]["alpha"] in info["params"]["alphas"]
    with pytest.warns(UserWarning, match="in-sample"):
        predictor.predict(train, copy=True)


def test_graph_used_is_stored_with_predictions(_crop_norm_session):
    adata = _crop_norm_session
    train = adata[adata.obs.library_id != "C4"].copy()
    test = adata[adata.obs.library_id == "C4"].copy()
    st.tl.fit(train, model="ridge_spatial", genes=GENES).predict(test)
    graph = test.obsp["pred_ridge_spatial_grid_connectivities"]
    assert graph.shape == (test.n_obs, test.n_obs) and graph.sum(axis=1).max() == 8
    assert test.uns["pred_ridge_spatial_grid_neighbors"]["params"]["kind"] == "grid"


def test_ridge_spatial_uses_neighbours():
    import scipy.sparse as sp

    from stpredict.models.ridge import neighbour_mean

    x = np.arange(8, dtype=float).reshape(4, 2)
    graph = sp.csr_matrix(np.array([[0, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=float))
    expected = np.array([(x[1] + x[2]) / 2, x[0], x[0], x[3]])  # a spot without neighbours keeps its own
    np.testing.assert_allclose(neighbour_mean(x, graph), expected)


def test_highly_predictive_genes_are_the_best_validated(fitted):
    fitted = fitted[0]
    ranked = fitted.gene_pearson.sort_values(ascending=False)
    assert fitted.highly_predictive(2) == ranked.index[:2].tolist() == ["ERBB2", "FASN"]
    assert len(fitted.highly_predictive(50)) == len(fitted.genes)


def test_a_saved_model_recognises_its_training_slides_under_other_names(fitted, tmp_path):
    import warnings

    predictor, train, test = fitted
    loaded = st.tl.load_model(predictor.save(tmp_path / "m.stpredict"))
    assert loaded.train_fingerprints == predictor.train_fingerprints
    assert sorted(loaded.train_fingerprints) == ["C2", "C3"]
    assert all(0 < len(f["spots"]) <= 256 and f["image"] for f in loaded.train_fingerprints.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error", st.StPredictWarning)  # a slide it never saw: no warning
        loaded.predict(test.copy())
    relabelled = train[train.obs.library_id == "C2"].copy()
    relabelled.obs["library_id"] = relabelled.obs["library_id"].cat.rename_categories({"C2": "new"})
    relabelled.uns["spatial"] = {"new": relabelled.uns["spatial"]["C2"]}
    relabelled.obs_names = [f"new_{i}" for i in range(relabelled.n_obs)]
    with pytest.warns(st.StPredictWarning, match=r"\{'new': 'C2'\}.*in-sample"):
        loaded.predict(relabelled)
    shifted = relabelled.copy()  # the same image, other spots: a new region of a training slide is not a copy
    shifted.obsm["spatial"] = shifted.obsm["spatial"] + 37.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", st.StPredictWarning)
        loaded.predict(shifted)
