"""Pathology foundation models built as their model cards say: architecture, preprocessing, output, weights.

Offline: every named timm encoder is built with random weights in its card's configuration, shrunk to one
transformer block (the same code path; the real depth is too big for CI), and checked for its embedding
size, its normalisation constants and the card's pooling of the token sequence.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

import stpredict as st
from stpredict.pp import _encoders
from stpredict.pp._encoders import load_encoder, to_model_input

# normalisation constants as the model cards write them (typed here, not imported: a wrong constant in the
# package must fail these tests)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HOPTIMUS_MEAN, HOPTIMUS_STD = (0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517)  # H-optimus-0 card
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's, which CONCH's card prescribes
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

CARD = {  # name: (embedding size, mean, pooling) from each model card
    "uni": (1024, IMAGENET_MEAN, "model"),
    "uni2-h": (1536, IMAGENET_MEAN, "model"),
    "virchow": (2560, IMAGENET_MEAN, "cls+mean"),
    "virchow2": (2560, IMAGENET_MEAN, "cls+mean"),
    "h-optimus-0": (1536, HOPTIMUS_MEAN, "model"),
    "h-optimus-1": (1536, HOPTIMUS_MEAN, "model"),
    "h0-mini": (768, HOPTIMUS_MEAN, "cls"),
    "prov-gigapath": (1536, IMAGENET_MEAN, "model"),
}


@pytest.fixture
def one_block(monkeypatch):
    """Named timm encoders with one transformer block (their card's width, registers and layers kept)."""
    for name in CARD:
        spec = _encoders.ENCODERS[name]
        monkeypatch.setitem(_encoders.ENCODERS, name, replace(spec, timm_kwargs={**spec.timm_kwargs, "depth": 1}))


def test_every_named_encoder_is_listed_with_its_card():
    named = set(st.pp.ENCODERS)
    assert set(CARD) | {"phikon", "phikon-v2", "conch", "resnet18", "resnet50", "densenet121", "vit_b_16"} == named
    for name, spec in st.pp.ENCODERS.items():
        assert spec.licence, name
        if spec.library != "torchvision":
            assert spec.page and spec.page.startswith("https://huggingface.co/"), name
    for name, (_, mean, _) in CARD.items():
        std = HOPTIMUS_STD if mean == HOPTIMUS_MEAN else IMAGENET_STD
        assert st.pp.ENCODERS[name].std == std, name
    conch = st.pp.ENCODERS["conch"]
    assert (conch.input_size, conch.mean, conch.std, conch.interpolation) == (448, CLIP_MEAN, CLIP_STD, "bicubic")
    for name in ("phikon", "phikon-v2", "resnet18", "resnet50", "densenet121", "vit_b_16"):
        assert (st.pp.ENCODERS[name].mean, st.pp.ENCODERS[name].std) == (IMAGENET_MEAN, IMAGENET_STD), name


@pytest.mark.parametrize("name", list(CARD))
def test_named_timm_encoders_build_as_their_cards_say(name, one_block):
    dim, mean, pooling = CARD[name]
    model, spec = load_encoder(name, random_weights=True)
    assert spec.dim == dim and spec.mean == mean and spec.pooling == pooling
    patches = np.random.default_rng(0).integers(0, 255, (2, 120, 120, 3), dtype=np.uint8)
    features = _encoders.embed_patches(model, spec, patches)
    assert features.shape == (2, dim) and np.isfinite(features).all()
    if pooling != "model":  # the card's embedding, recomputed from the token sequence by hand
        with torch.inference_mode():
            tokens = model.inner.forward_features(to_model_input(patches, spec, "cpu"))
        expected = tokens[:, 0]
        if pooling == "cls+mean":
            expected = torch.cat([expected, tokens[:, model.inner.num_prefix_tokens :].mean(1)], dim=-1)
        np.testing.assert_allclose(features, expected.numpy(), rtol=1e-4, atol=1e-5)
    if name == "virchow2":
        assert model.inner.num_prefix_tokens == 5  # class token + 4 registers, excluded from the mean


def test_resize_then_centre_crop_as_prov_gigapath_card():
    spec = st.pp.ENCODERS["prov-gigapath"]
    patch = np.random.default_rng(1).integers(0, 255, (1, 300, 300, 3), dtype=np.uint8)
    x = to_model_input(patch, spec, "cpu")
    reference = torch.from_numpy(patch).permute(0, 3, 1, 2).float() / 255
    reference = TF.center_crop(TF.resize(reference, [256, 256], interpolation=TF.InterpolationMode.BICUBIC), [224, 224])
    reference = TF.normalize(reference, list(spec.mean), list(spec.std))
    assert tuple(x.shape) == (1, 3, 224, 224)
    np.testing.assert_allclose(x.numpy(), reference.numpy(), atol=2e-2)


def test_timm_models_take_their_own_pretrained_configuration_and_overrides():
    _, spec = load_encoder("timm:vit_small_patch16_224.augreg_in21k", random_weights=True)
    assert spec.mean == (0.5, 0.5, 0.5) and spec.interpolation == "bicubic"  # not ImageNet's constants
    assert spec.resize == 249 and spec.input_size == 224  # crop_pct 0.9
    _, spec = load_encoder(
        "timm:resnet18", random_weights=True, preprocessing={"mean": [0.6, 0.6, 0.6], "resize": None}
    )
    assert spec.mean == (0.6, 0.6, 0.6) and spec.resize is None and spec.dim == 512
    with pytest.raises(ValueError, match="Unknown preprocessing"):
        load_encoder("timm:resnet18", random_weights=True, preprocessing={"means": [0.5] * 3})
    with pytest.raises(ValueError, match="pooling can be changed for timm"):
        load_encoder("resnet18", random_weights=True, preprocessing={"pooling": "cls"})


def test_a_model_trained_on_one_preprocessing_refuses_features_of_another(crop, tmp_path):
    torch.manual_seed(0)
    model, _ = load_encoder("timm:resnet18", random_weights=True)
    checkpoint = tmp_path / "resnet18.pt"
    torch.save(model.state_dict(), checkpoint)
    st.pp.normalize(crop)
    options = {"method": "timm:resnet18", "checkpoint": checkpoint, "device": "cpu", "show_progress_bar": False}
    small = {"input_size": 64, "resize": None}  # a CNN takes any size: 64 px keeps the test fast
    st.pp.image_features(crop, key_added="X_enc", preprocessing=small, **options)
    recorded = crop.uns["stpredict_features"]["X_enc"]["preprocessing"]
    assert recorded["mean"] == pytest.approx(IMAGENET_MEAN) and recorded["input_size"] == 64
    train, test = crop[crop.obs.library_id != "C4"].copy(), crop[crop.obs.library_id == "C4"].copy()
    predictor = st.tl.fit(train, genes=["ERBB2"], use_rep="X_enc")
    st.pp.image_features(test, key_added="X_enc", preprocessing={**small, "mean": [0.5, 0.5, 0.5]}, **options)
    with pytest.raises(ValueError, match="preprocessing"):
        predictor.predict(test)
    del test.obsm["X_enc"]
    predictor.predict(test)  # recomputed with the recorded recipe, preprocessing included
    np.testing.assert_allclose(
        test.obsm["pred_ridge"].to_numpy(),
        predictor.predict(crop[crop.obs.library_id == "C4"].copy(), copy=True).obsm["pred_ridge"].to_numpy(),
        rtol=1e-5,
    )


def test_gated_and_missing_packages_say_what_to_do(monkeypatch):
    import timm

    def refused(*args, **kwargs):
        raise OSError("401 Client Error: access to model MahmoodLab/UNI2-h is restricted")

    monkeypatch.setattr(timm, "create_model", refused)
    with pytest.raises(
        PermissionError, match=r"CC-BY-NC-ND-4.0.*huggingface.co/MahmoodLab/UNI2-h.*huggingface-cli login"
    ):
        load_encoder("uni2-h", pretrained=True)
    with pytest.raises(ValueError, match="needs weights.*huggingface.co/bioptimus/H-optimus-0"):
        load_encoder("h-optimus-0")
    monkeypatch.setitem(__import__("sys").modules, "conch", None)
    with pytest.raises(ImportError, match="CONCH package: pip install git\\+https://github.com/mahmoodlab/CONCH.git"):
        load_encoder("conch", random_weights=True)


@pytest.mark.parametrize(
    ("name", "dim", "model_class"), [("phikon", 768, "ViTModel"), ("phikon-v2", 1024, "Dinov2Model")]
)
def test_transformers_encoders_build_as_their_cards_say(name, dim, model_class, monkeypatch):
    spec = _encoders.ENCODERS[name]
    monkeypatch.setitem(_encoders.ENCODERS, name, replace(spec, hf_config={**spec.hf_config, "num_hidden_layers": 1}))
    model, spec = load_encoder(name, random_weights=True)
    assert spec.dim == dim and spec.mean == IMAGENET_MEAN and type(model.inner).__name__ == model_class
    patches = np.random.default_rng(0).integers(0, 255, (2, 100, 100, 3), dtype=np.uint8)
    features = _encoders.embed_patches(model, spec, patches)
    with torch.inference_mode():  # the card: the CLS token of the last hidden state
        expected = model.inner(pixel_values=to_model_input(patches, spec, "cpu")).last_hidden_state[:, 0]
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_conch_builds_from_the_conch_package_and_loads_its_checkpoint_layout(tmp_path):
    """Runs where the CONCH package is installed (GitHub only, so not in CI; verified against its source)."""
    pytest.importorskip("conch.open_clip_custom")
    import torch

    model, spec = load_encoder("conch", random_weights=True)
    x = torch.rand(1, 3, spec.input_size, spec.input_size)
    with torch.no_grad():
        features = model(x)
    assert features.shape == (1, 512)
    torch.save(model.inner.state_dict(), tmp_path / "pytorch_model.bin")  # CONCH's file: the CoCa's state dict
    loaded, _ = load_encoder("conch", checkpoint=tmp_path / "pytorch_model.bin")
    with torch.no_grad():
        assert torch.equal(loaded(x), features)


def test_hf_model_from_a_local_folder_uses_its_image_processor(tmp_path):
    """``hf:<folder or id>``: weights and preprocessing from what the model was saved with (offline here)."""
    import torch
    import transformers

    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=64, patch_size=16
    )
    saved = transformers.ViTModel(config, add_pooling_layer=False)
    saved.save_pretrained(tmp_path)
    transformers.ViTImageProcessor(
        size={"height": 64, "width": 64}, image_mean=[0.1, 0.2, 0.3], image_std=[0.5, 0.6, 0.7], resample=3
    ).save_pretrained(tmp_path)
    model, spec = load_encoder(f"hf:{tmp_path}", pretrained=True)
    assert (spec.dim, spec.input_size, spec.mean, spec.std, spec.interpolation) == (
        32, 64, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7), "bicubic"
    )  # fmt: skip
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), saved(pixel_values=x).last_hidden_state[:, 0])  # the CLS token
    (tmp_path / "preprocessor_config.json").unlink()
    with pytest.warns(st.StPredictWarning, match="no image processor found"):
        _, spec = load_encoder(f"hf:{tmp_path}", pretrained=True)
    assert spec.mean == (0.485, 0.456, 0.406)


def test_encoders_read_patches_at_their_training_resolution_by_default(crop, tmp_path, monkeypatch, caplog):
    """``target_mpp='native'``: an encoder trained on 0.5 µm/px tiles reads 224 px at 0.5 µm/px, said in the log."""
    from stpredict.pp._encoders import ENCODERS, encoder_spec
    from stpredict.pp._features import resolve_target_mpp

    assert ENCODERS["h-optimus-0"].native_mpp == 0.5 and ENCODERS["uni"].native_mpp == 0.5
    assert ENCODERS["resnet50"].native_mpp is None
    assert resolve_target_mpp(crop, "handcrafted", "native", "px") is None
    assert resolve_target_mpp(crop, "uni", None, "px") is None  # the slides' own pixels, when asked
    torch.manual_seed(0)
    model, _ = load_encoder("timm:resnet18", random_weights=True)
    checkpoint = tmp_path / "resnet18.pt"
    torch.save(model.state_dict(), checkpoint)
    monkeypatch.setitem(ENCODERS, "tiny-native", replace(encoder_spec("timm:resnet18"), name="tiny-native",
                                                         native_mpp=0.5, dim=512))  # fmt: skip
    c4 = crop[crop.obs.library_id == "C4"].copy()
    options = {"checkpoint": checkpoint, "device": "cpu", "show_progress_bar": False, "size": 64,
               "preprocessing": {"input_size": 32, "resize": None}}  # fmt: skip
    with caplog.at_level("INFO", logger="stpredict"):
        st.pp.image_features(c4, method="tiny-native", key_added="X_native", **options)
    assert "0.5 µm/px" in caplog.text
    assert c4.uns["stpredict_features"]["X_native"]["target_mpp"] == 0.5
    st.pp.image_features(c4, method="tiny-native", key_added="X_explicit", target_mpp=0.5, **options)
    st.pp.image_features(c4, method="tiny-native", key_added="X_own", target_mpp=None, **options)
    np.testing.assert_allclose(c4.obsm["X_native"], c4.obsm["X_explicit"], rtol=1e-5)
    assert not np.allclose(c4.obsm["X_native"], c4.obsm["X_own"])  # the crop is 0.69 µm/px
    del c4.uns["spatial"]["C4"]["scalefactors"]["microns_per_pixel"]
    with pytest.warns(st.StPredictWarning, match="record no µm per pixel"):
        assert resolve_target_mpp(c4, "tiny-native", "native", "px") is None
    with pytest.raises(ValueError, match="Did you mean 'uni2-h'"):
        encoder_spec("uni2")


def test_a_safetensors_checkpoint_loads_as_the_state_dict_does(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model, _ = load_encoder("timm:resnet18", random_weights=True)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    a, _ = load_encoder("timm:resnet18", checkpoint=tmp_path / "model.safetensors")
    b, _ = load_encoder("timm:resnet18", checkpoint=tmp_path / "pytorch_model.bin")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))
