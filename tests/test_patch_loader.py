"""Patches cut by DataLoader workers equal those cut in the main process; a batch too big for the GPU is split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stpredict as st
from stpredict.pp._encoders import embed_patches, load_encoder
from stpredict.pp._patches import iter_slide_patches


def test_worker_shards_cover_every_spot_once(crop):
    options = {"size": 64, "batch_size": 16}
    shards = [list(iter_slide_patches(crop, shard=(i, 3), **options)) for i in range(3)]
    positions = np.concatenate([p for shard in shards for _, p, _ in shard])
    assert sorted(positions.tolist()) == list(range(crop.n_obs))
    serial = {tuple(p): patches for _, p, patches in iter_slide_patches(crop, **options)}
    for shard in shards:
        for _, p, patches in shard:
            np.testing.assert_array_equal(patches, serial[tuple(p)])


def test_features_from_workers_equal_the_serial_ones(crop):
    serial = st.pp.image_features(crop, show_progress_bar=False, copy=True).obsm["X_handcrafted"]
    parallel = st.pp.image_features(crop, num_workers=2, batch_size=32, show_progress_bar=False, copy=True)
    np.testing.assert_allclose(parallel.obsm["X_handcrafted"], serial, rtol=1e-6)
    with pytest.raises(ValueError, match="num_workers must be an integer"):
        st.pp.image_features(crop, num_workers=-1, show_progress_bar=False, copy=True)


def test_a_batch_that_does_not_fit_is_split_and_retried():
    model, spec = load_encoder("timm:resnet18", random_weights=True, preprocessing={"input_size": 32, "resize": None})
    patches = np.random.default_rng(0).integers(0, 255, (10, 32, 32, 3), dtype=np.uint8)
    expected = embed_patches(model, spec, patches)
    calls = []

    class SmallMemory(torch.nn.Module):  # behaves as a GPU that holds at most 3 patches
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            calls.append(len(x))
            if len(x) > 3:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return self.inner(x)

    np.testing.assert_allclose(embed_patches(SmallMemory(), spec, patches), expected, rtol=1e-5, atol=1e-6)
    assert calls[0] == 10 and max(calls[1:]) <= 5 and sum(c for c in calls if c <= 3) == 10
