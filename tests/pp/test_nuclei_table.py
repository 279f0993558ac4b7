"""The vectorised nuclei morphology equals scikit-image's regionprops, nucleus by nucleus."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import perimeter, regionprops
from skimage.morphology import skeletonize

import stpredict as st
from stpredict.pp._nuclei import MORPHOLOGY, _morphology_table, segment_nuclei


def regionprops_reference(labels: np.ndarray, mpp: float) -> np.ndarray:
    """The 14 features as computed before (one regionprops object per nucleus)."""
    rows = []
    for region in regionprops(labels):
        area = region.area * mpp**2
        per = max(region.perimeter, 1e-6) * mpp
        major, minor = region.axis_major_length * mpp, region.axis_minor_length * mpp
        convex_perimeter = perimeter(region.image_convex) * mpp
        rows.append([
            area, per, region.eccentricity, major, minor, region.solidity, region.extent, region.orientation,
            4.0 * np.pi * area / per**2, major / minor if minor > 0 else 1.0, region.area_convex * mpp**2,
            convex_perimeter / per, float(skeletonize(region.image).sum()) * mpp, convex_perimeter,
        ])  # fmt: skip
    return np.array(rows).reshape(-1, len(MORPHOLOGY))


@pytest.fixture(scope="module")
def patches():
    crop = st.datasets.her2st_crop()
    mpp = crop.uns["spatial"]["C2"]["scalefactors"]["microns_per_pixel"]
    return st.pp.extract_patches(crop[::18]), mpp


def test_every_nucleus_gets_regionprops_values(patches):
    images, mpp = patches
    checked = 0
    for patch in images:
        labels = segment_nuclei(patch, mpp)
        table, centroids = _morphology_table(labels, mpp)
        reference = regionprops_reference(labels, mpp)
        assert table.shape == reference.shape
        others = [i for i, name in enumerate(MORPHOLOGY) if name != "orientation"]
        np.testing.assert_allclose(table[:, others], reference[:, others], rtol=1e-9, atol=1e-12)
        # orientation is an axis angle in [-pi/2, pi/2]: +pi/2 and -pi/2 are the same axis, and for nuclei
        # along an image axis scikit-image picks the sign from rounding noise in its moments
        turn = np.angle(np.exp(2j * (table[:, MORPHOLOGY.index("orientation")] - reference[:, 7])))
        np.testing.assert_allclose(turn, 0.0, atol=1e-9)
        np.testing.assert_allclose(centroids, [r.centroid for r in regionprops(labels)], atol=1e-9)
        checked += len(table)
    assert checked > 500  # real nuclei, not an empty test
