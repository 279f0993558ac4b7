"""Neighbour searches of SPCS and EAGS: exact k-d tree, approximate pynndescent, and the automatic choice."""

from __future__ import annotations

import numpy as np
import pytest

from stpredict.pp import _neighbours
from stpredict.pp._neighbours import nearest_neighbours


def brute_force(points: np.ndarray, k: int) -> np.ndarray:
    d = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


@pytest.fixture
def clustered():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 10)) * 5
    return centres[rng.integers(0, 20, 1500)] + rng.normal(size=(1500, 10))


def test_exact_search_finds_the_brute_force_neighbours(clustered, monkeypatch):
    found = nearest_neighbours(clustered, 16, exact=True)
    assert found.method in ("kdtree", "brute", "scan")
    np.testing.assert_array_equal(np.sort(found.index, axis=1), np.sort(brute_force(clustered, 16), axis=1))
    monkeypatch.setattr(_neighbours, "SAMPLE_QUERIES", 100)  # time both exact searches; force each in turn
    for method, times in (("kdtree", [0, 1, 1]), ("brute", [1, 0, 1]), ("scan", [1, 1, 0])):
        monkeypatch.setattr(
            _neighbours, "_projections", lambda searches, *_, t=times: dict(zip(searches, t, strict=True))
        )
        forced = nearest_neighbours(clustered, 16, exact=True)
        assert forced.method == method
        np.testing.assert_array_equal(np.sort(forced.index, axis=1), np.sort(found.index, axis=1))
        np.testing.assert_allclose(forced.distance, found.distance, rtol=1e-6)
    assert (found.index != np.arange(len(clustered))[:, None]).all()  # never the point itself
    assert (np.diff(found.distance, axis=1) >= 0).all()


def test_duplicated_points_never_list_themselves():
    points = np.repeat(np.arange(10.0)[:, None], 3, axis=0)  # every point three times
    found = nearest_neighbours(points, 2, exact=True)
    assert (found.index != np.arange(30)[:, None]).all()
    assert (found.distance == 0).all()  # its two copies


def test_approximate_search_has_high_recall(clustered):
    found = nearest_neighbours(clustered, 16, exact=False)
    assert found.method == "pynndescent"
    truth = brute_force(clustered, 16)
    recall = np.mean([len(set(a) & set(b)) / 16 for a, b in zip(found.index, truth, strict=True)])
    assert recall > 0.95
    assert (found.index != np.arange(len(clustered))[:, None]).all()


def test_automatic_choice_switches_when_the_exact_search_would_be_slow(clustered, monkeypatch):
    assert nearest_neighbours(clustered, 5).method in ("kdtree", "brute", "scan")
    monkeypatch.setattr(_neighbours, "SAMPLE_QUERIES", 100)  # inputs this small are otherwise never timed
    monkeypatch.setattr(_neighbours, "EXACT_BUDGET_S", 0.0)
    assert nearest_neighbours(clustered, 5).method == "pynndescent"
    assert nearest_neighbours(clustered, 5, exact=True).method in ("kdtree", "brute", "scan")  # an explicit choice wins


def test_too_many_neighbours_is_an_error():
    with pytest.raises(ValueError, match="Cannot find 3 neighbours per point among 3 points"):
        nearest_neighbours(np.zeros((3, 2)), 3)


def test_timing_sample_is_runs_of_consecutive_points():
    rng = np.random.default_rng(0)
    sample = _neighbours._sample(np.zeros((100_000, 2)), rng)
    assert len(sample) == _neighbours.SAMPLE_QUERIES
    assert np.all(np.diff(sample) > 0) and sample[-1] < 100_000
    assert (np.diff(sample) == 1).mean() > 0.99  # consecutive, as the full search visits them
    np.testing.assert_array_equal(_neighbours._sample(np.zeros((50, 2)), rng), np.arange(50))


def test_clear_losers_are_timed_on_the_first_run_only(monkeypatch):
    timed = []

    def projected_seconds(search, points, queries):
        timed.append((search, len(queries)))
        return {"fast": 1.0, "close": 2.0, "slow": 10.0}[search]

    monkeypatch.setattr(_neighbours, "_projected_seconds", projected_seconds)
    sample = np.arange(2000)
    result = _neighbours._projections({n: n for n in ("fast", "close", "slow")}, np.zeros((10, 2)), sample)
    assert result == {"fast": 1.0, "close": 2.0, "slow": 10.0}
    assert sorted(timed) == [("close", 250), ("close", 2000), ("fast", 250), ("fast", 2000), ("slow", 250)]
