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


def test_watershed_markers_are_peak_local_max(patches):
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max

    from stpredict.pp._nuclei_kernels import watershed_peaks

    images, mpp = patches
    masks = [segment_nuclei(patch, mpp) > 0 for patch in images]
    # edge cases: a one-pixel-wide line (a plateau: every pixel a local maximum), a square plateau beside a
    # disc touching it diagonally, a mask that fills the image, random blobs
    line = np.zeros((40, 40), bool)
    line[20, 5:35] = True
    shapes = np.zeros((40, 40), bool)
    shapes[2:6, 2:6] = True
    yy, xx = np.mgrid[:40, :40]
    shapes |= (yy - 14) ** 2 + (xx - 14) ** 2 < 50
    blobs = ndi.gaussian_filter(np.random.default_rng(0).random((80, 80)), 2) > 0.5
    masks += [line, shapes, np.ones((12, 12), bool), blobs]
    total = 0
    for mask in masks:
        distance = ndi.distance_transform_edt(mask)
        components = ndi.label(mask)[0]
        for radius in (1, 3, 4):
            expected = peak_local_max(distance, min_distance=radius, labels=components, exclude_border=False)
            np.testing.assert_array_equal(watershed_peaks(distance, components, radius), expected.reshape(-1, 2))
            total += len(expected)
    assert total > 1000


def test_convex_hulls_are_scikit_images():
    from scipy import ndimage as ndi
    from skimage.measure import perimeter
    from skimage.morphology import convex_hull_image

    from stpredict.pp._nuclei_kernels import hull_area_perimeter

    rng = np.random.default_rng(1)
    labels = ndi.label(ndi.gaussian_filter(rng.random((200, 200)), 1.5) > 0.52)[0]
    labels[0, 0], labels[199, 199] = labels.max() + 1, labels.max() + 2  # one-pixel objects at the corners
    present = np.unique(labels)[1:]
    objects = ndi.find_objects(labels)
    boxes = np.array([[o[0].start, o[0].stop, o[1].start, o[1].stop] for o in objects])
    area, per = hull_area_perimeter(labels, present, boxes)
    for i, label in enumerate(present):
        hull = convex_hull_image(labels[objects[label - 1]] == label)
        assert area[i] == hull.sum()
        assert per[i] == pytest.approx(perimeter(hull), abs=1e-9)
    assert len(present) > 50
