"""The typed feature recipe: what st.pp records, what models and the cache match on."""

import anndata as ad
import numpy as np
import pytest

import stpredict as st
from stpredict._recipe import FEATURES_KEY, FeatureRecipe, stored_key
from stpredict.models._inputs import build_inputs


def test_recipe_survives_an_h5ad_round_trip_and_still_matches(tmp_path):
    adata = st.datasets.her2st_crop()[:5].copy()
    recipe = FeatureRecipe(
        "resnet18", size=112, preprocessing={"mean": (0.5, 0.5, 0.5), "input_size": 224}, pretrained=True
    )
    adata.obsm["X_enc"] = np.zeros((5, 3), np.float32)
    recipe.store(adata, "X_enc", feature_names=["a", "b", "c"])
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert FeatureRecipe.of(back, "X_enc") == recipe  # tuples came back as arrays: still the same recipe
    assert stored_key(back, recipe) == "X_enc"
    assert stored_key(back, recipe.replace(pretrained=False)) is None
    assert recipe.differences(recipe.replace(size=224, checkpoint="elsewhere.pt")) == {"size": (112, 224)}


def test_digest_names_only_the_compared_fields():
    recipe = FeatureRecipe("handcrafted", size=64)
    assert recipe.digest() == FeatureRecipe("handcrafted", size=64.0, checkpoint="a/path").digest()
    assert recipe.digest() != recipe.replace(target_mpp=0.5).digest()
    assert recipe.digest() != recipe.replace(grid=5).digest()


def test_neighbour_views_are_found_only_for_their_own_recipe():
    adata = st.datasets.her2st_crop()[:4].copy()
    st.pp.neighbour_features(adata, tile_size=32, grid=3, show_progress_bar=False)
    inputs, _ = build_inputs(adata, np.zeros((4, 1)), needs_images=True)
    assert inputs.images.stored(FeatureRecipe("handcrafted", size=32, grid=3)) == "X_handcrafted_neighbours"
    for other in ({"grid": 5}, {"size": 64}, {"pretrained": True}, {"grid": None}):
        assert inputs.images.stored(FeatureRecipe("handcrafted", **{"size": 32, "grid": 3, **other})) is None


def test_records_written_before_the_typed_recipe_still_read():
    adata = st.datasets.her2st_crop()[:4].copy()
    adata.obsm["X_old"] = np.zeros((4, 25, 44), np.float32)
    adata.uns[FEATURES_KEY] = {
        "X_old": {"method": "handcrafted", "tile_size": 32, "unit": "px", "grid": 5, "target_mpp": None,
                  "checkpoint": None}
    }  # fmt: skip
    assert FeatureRecipe.of(adata, "X_old") == FeatureRecipe("handcrafted", size=32, grid=5)


def test_a_predictor_names_the_field_that_differs():
    adata = st.datasets.her2st_crop()
    st.pp.normalize(adata)
    st.pp.image_features(adata, size=64, show_progress_bar=False)
    train = adata[adata.obs.library_id != "C4"].copy()
    predictor = st.tl.fit(train, genes=["ERBB2"], use_rep="X_handcrafted")
    assert FeatureRecipe.from_record(predictor.rep_recipe) == FeatureRecipe("handcrafted", size=64)
    test = adata[adata.obs.library_id == "C4"].copy()
    st.pp.image_features(test, size=64, target_mpp=1.0, show_progress_bar=False)
    with pytest.raises(ValueError, match=r"target_mpp: slide 1.0 vs model None"):
        st.tl.predict(predictor, test)
