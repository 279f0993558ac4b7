"""The architecture probes' synthetic targets are what benchmarks/bench_probes.py says they are.

Every family is checked for the property that makes it a probe, on the real crop's spot layout and features:
a construction that let the spot's own features into a neighbourhood family, left a linear part in the
non-linear one, or mixed slides, would give the probe scores in docs/benchmarks.md another meaning.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def probes():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("bench_probes", ROOT / "benchmarks" / "bench_probes.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def _r2(design: np.ndarray, y: np.ndarray) -> float:
    """Share of ``y``'s variance a least-squares fit on ``design`` (with an intercept) explains."""
    x = np.column_stack([np.ones(len(y)), design])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return 1 - np.var(y - x @ coef) / np.var(y)


def test_each_probe_family_depends_on_what_it_claims(probes, crop_norm):
    adata = crop_norm
    f = np.asarray(adata.obsm["X_handcrafted"], dtype=np.float64)
    f = (f - f.mean(0)) / np.where(f.std(0) > 0, f.std(0), 1.0)  # the crop has a constant feature
    signals = probes.probe_signals(adata, np.random.default_rng(0))
    assert list(signals) == list(probes.FAMILIES)
    for name, s in signals.items():
        assert abs(s.mean()) < 1e-9 and abs(s.var() - 1) < 1e-9, name  # standardised

    ring1, ring2 = probes.ring_graphs(adata)
    assert ring1.diagonal().sum() == 0 and ring2.diagonal().sum() == 0  # the spot itself excluded
    assert np.asarray((ring1 > 0).sum(axis=1)).max() == 8  # legacy ST's square grid: 8 neighbours inside
    assert ((ring1 > 0).astype(int) - (ring2 > 0).astype(int)).max() <= 0  # ring 1 inside ring 2

    def mean_over(graph):
        degree = np.maximum(np.asarray(graph.sum(axis=1)).ravel(), 1)
        return (graph @ f) / degree[:, None]

    assert _r2(f, signals["own_linear"]) > 1 - 1e-9  # linear in the spot's own features
    assert _r2(f, signals["own_nonlinear"]) < 1e-9  # nothing left for a linear model
    assert _r2(mean_over(ring1), signals["ring1"]) > 1 - 1e-9  # linear in the neighbours' mean features
    assert _r2(f, signals["ring1"]) < 0.9  # ... and not in the spot's own
    assert _r2(mean_over(ring2), signals["ring2"]) > 1 - 1e-9
    # a region's spots share one value: about SPOTS_PER_REGION spots per value, never across slides
    region = signals["region"]
    n_values = len(np.unique(region.round(12)))
    assert adata.n_obs / n_values > probes.SPOTS_PER_REGION / 2
    library = adata.obs["library_id"].to_numpy()
    for value in np.unique(region.round(12)):
        assert len(set(library[region.round(12) == value])) == 1
    # slide context: linear in the features on each slide, but with other weights on each
    context = signals["slide_context"]
    for lib in np.unique(library):
        assert _r2(f[library == lib], context[library == lib]) > 1 - 1e-9
    assert _r2(f, context) < 0.99
    assert 0.2 < _r2(f, signals["mixed"]) < 0.9  # half own, half neighbourhood


def test_probe_targets_add_the_stated_noise_to_every_draw(probes, crop_norm):
    targets, table = probes.probe_targets(crop_norm, draws=2, noise=0.25, seed=3)
    assert targets.shape == (crop_norm.n_obs, 2 * len(probes.FAMILIES))
    assert table["family"].tolist() == list(probes.FAMILIES) * 2 and set(table["draw"]) == {0, 1}
    assert table["gene"].is_unique
    np.testing.assert_allclose(targets.mean(axis=0), 3.0, atol=0.15)  # the log1p-like level
    np.testing.assert_allclose(targets.var(axis=0).mean(), 1.25, rtol=0.1)  # signal 1 + noise 0.25
    again, _ = probes.probe_targets(crop_norm, draws=2, noise=0.25, seed=3)
    np.testing.assert_array_equal(again, targets)  # reproducible from the seed
    other, _ = probes.probe_targets(crop_norm, draws=2, noise=0.25, seed=4)
    assert np.abs(np.corrcoef(other[:, 0], targets[:, 0])[0, 1]) < 0.5  # a new draw: new weights
