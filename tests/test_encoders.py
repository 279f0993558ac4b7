from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

import stpredict as st
from stpredict.pp._encoders import to_model_input


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)  # includes the fc head, which is ignored
    return path


def test_encoder_embeddings_match_plain_torchvision(crop, resnet18_checkpoint):
    sub = crop[:6].copy()
    st.pp.image_features(sub, method="resnet18", checkpoint=resnet18_checkpoint, device="cpu", show_progress_bar=False)
    reference = torchvision.models.resnet18()
    reference.load_state_dict(torch.load(resnet18_checkpoint, weights_only=True))
    reference.fc = torch.nn.Identity()
    reference.eval()
    patches = st.pp.extract_patches(sub)
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    with torch.inference_mode():
        expected = reference(x).numpy()
    np.testing.assert_allclose(sub.obsm["X_resnet18"], expected, rtol=1e-4, atol=1e-5)
    assert sub.uns["stpredict_features"]["X_resnet18"]["checkpoint"] == str(resnet18_checkpoint)


def test_encoder_needs_explicit_weights_and_fitting_checkpoint(crop, resnet18_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="needs weights"):
        st.pp.image_features(crop[:2].copy(), method="resnet18")
    with pytest.raises(ValueError, match="does not fit encoder 'resnet50'"):
        st.pp.load_encoder("resnet50", checkpoint=resnet18_checkpoint)
    with pytest.raises(FileNotFoundError):
        st.pp.load_encoder("resnet18", checkpoint=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="Unknown image feature method"):
        st.pp.image_features(crop[:2].copy(), method="not_a_model")


def test_model_input_resizes_and_normalises():
    spec = st.pp.ENCODERS["resnet18"]
    patches = np.full((2, 100, 100, 3), 255, dtype=np.uint8)
    x = to_model_input(patches, spec, "cpu")
    assert tuple(x.shape) == (2, 3, 224, 224)
    np.testing.assert_allclose(x[0, :, 5, 5].numpy(), (1 - np.array(spec.mean)) / np.array(spec.std), rtol=1e-5)


@pytest.mark.parametrize("mode", ["supervised", "simclr"])
def test_train_encoder_learns_and_checkpoint_roundtrips(crop, mode, tmp_path):
    st.pp.normalize(crop)
    sub = crop[crop.obs["library_id"] != "C4"].copy()
    path = tmp_path / f"{mode}.pt"
    encoder = st.tl.train_encoder(
        sub,
        mode=mode,
        genes=["ERBB2", "GNAS", "IGKC", "FASN"],
        input_size=32,
        epochs=4,
        batch_size=32,
        lr=3e-3,
        save=path,
        show_progress_bar=False,
    )
    history = sub.uns["stpredict_encoder"]["X_encoder"]["history"]
    assert len(history) == 4 and np.isfinite(history).all()
    assert history[-1] < history[0]  # it learns
    # a saved-then-loaded checkpoint gives identical embeddings, on a slide it never saw
    test = crop[crop.obs["library_id"] == "C4"].copy()
    st.pp.image_features(test, method="resnet18", checkpoint=path, key_added="X_loaded", show_progress_bar=False)
    np.testing.assert_array_equal(test.obsm["X_loaded"], encoder.embed(test))
    np.testing.assert_array_equal(sub.obsm["X_encoder"], encoder.embed(sub))
    assert sub.obsm["X_encoder"].std(axis=0).mean() > 0


def test_train_encoder_errors(crop):
    with pytest.raises(ValueError, match="mode"):
        st.tl.train_encoder(crop, mode="byol")
    with pytest.raises(KeyError, match="log1p"):
        st.tl.train_encoder(crop, genes=["ERBB2"])


def test_dihedral_augmentation_moves_pixels_exactly():
    import torch

    from stpredict.models._image_training import dihedral

    x = torch.arange(6 * 3 * 5 * 5, dtype=torch.float32).reshape(6, 3, 5, 5)
    turns = torch.tensor([0, 1, 2, 3, 1, 3])
    mirror = torch.tensor([False, False, True, True, True, False])
    out = dihedral(x, turns, mirror)
    for i in range(6):
        expected = torch.rot90(x[i], int(turns[i]), dims=(1, 2))
        expected = torch.flip(expected, dims=(2,)) if mirror[i] else expected
        assert torch.equal(out[i], expected)


def test_resized_crop_zooms_into_the_patch():
    import torch

    from stpredict.models._image_training import _resized_crop

    ramp = torch.linspace(0, 1, 32).expand(8, 3, 32, 32).contiguous()  # brightness grows left to right
    out = _resized_crop(ramp, torch.Generator().manual_seed(0))
    assert out.shape == ramp.shape
    assert out.min() >= 0 and out.max() <= 1  # only pixels of the patch
    assert torch.allclose(out[:, :, 0], out[:, :, -1])  # still a horizontal ramp ...
    slope = (out[:, 0, 0, -1] - out[:, 0, 0, 0]) / (ramp[0, 0, 0, -1] - ramp[0, 0, 0, 0])
    assert ((slope > 0.69) & (slope < 1.0)).all()  # ... zoomed by 1/side, side in [sqrt(.5), 1]
    assert not torch.allclose(out, ramp)
    constant = torch.full((4, 3, 16, 16), 0.3)
    assert torch.allclose(_resized_crop(constant, torch.Generator().manual_seed(0)), constant)
