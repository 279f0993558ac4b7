"""Nuclei morphology and topology per spot (M2TGLGO's 14 + 3 features), segmented without model weights.

Segmentation: haematoxylin channel of colour deconvolution (Ruifrok & Johnston) -> Gaussian blur ->
Otsu threshold (never below a floor, so a patch without nuclei stays empty) -> small objects removed ->
touching nuclei split by a distance-transform watershed. Lengths are reported in µm and areas in µm²
so that features are comparable across scan resolutions.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import Delaunay
from skimage.color import rgb2hed
from skimage.filters import gaussian, threshold_otsu
from skimage.morphology import skeletonize
from skimage.segmentation import watershed

from ._nuclei_kernels import hull_area_perimeter, label_perimeters, watershed_peaks

MORPHOLOGY = (
    "area",
    "perimeter",
    "eccentricity",
    "major_axis_length",
    "minor_axis_length",
    "solidity",
    "extent",
    "orientation",
    "circularity",
    "aspect_ratio",
    "convex_area",
    "convexity",
    "skeleton_length",
    "convex_perimeter",
)
TOPOLOGY = ("delaunay_mean_distance", "delaunay_max_distance", "delaunay_min_distance")
MIN_NUCLEUS_AREA_UM2 = 12.0  # ~4 µm across: smaller blobs are debris or noise
MIN_HAEMATOXYLIN = 0.03  # floor of the Otsu threshold on the haematoxylin density
NUCLEUS_SEPARATION_UM = 3.0  # closest centres the watershed splits


def nuclei_feature_names() -> list[str]:
    """Column names of :func:`nuclei_features`: 14 morphology, 3 topology, and the nuclei count.

    Examples
    --------
    >>> import stpredict as st
    >>> len(st.pp.nuclei_feature_names()), st.pp.nuclei_feature_names()[-1]
    (18, 'nuclei_count')
    """
    return [f"nuclei_{m}" for m in MORPHOLOGY] + [f"nuclei_{t}" for t in TOPOLOGY] + ["nuclei_count"]


def _drop_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Remove labelled objects smaller than ``min_area`` pixels (works on any scikit-image version)."""
    sizes = np.bincount(labels.ravel())
    small = sizes < min_area
    small[0] = False
    labels = labels.copy()
    labels[small[labels]] = 0
    return labels


def segment_nuclei(patch: np.ndarray, microns_per_pixel: float, threshold: float | None = None) -> np.ndarray:
    """Label image of the nuclei of one RGB patch (0 = background).

    ``threshold``: the (blurred) haematoxylin density above which a pixel is nucleus; default the patch's own
    Otsu threshold (never below a floor). Give one threshold for a whole slide
    (:func:`haematoxylin_threshold`) so that a nucleus is segmented the same whichever region is read.

    Examples
    --------
    >>> import numpy as np, stpredict as st
    >>> patch = np.full((64, 64, 3), (235, 180, 210), dtype=np.uint8)
    >>> patch[20:30, 20:30] = (60, 50, 140)  # one haematoxylin-dark blob
    >>> int(st.pp.segment_nuclei(patch, microns_per_pixel=0.5).max())
    1
    """
    haematoxylin = _haematoxylin(patch)
    if threshold is None:
        try:
            threshold = max(threshold_otsu(haematoxylin), MIN_HAEMATOXYLIN)
        except ValueError:  # a constant patch
            return np.zeros(patch.shape[:2], dtype=np.int32)
    mask = haematoxylin > threshold
    min_area = max(4, int(MIN_NUCLEUS_AREA_UM2 / microns_per_pixel**2))
    mask = _drop_small(ndi.label(mask)[0], min_area) > 0
    if not mask.any():
        return np.zeros(patch.shape[:2], dtype=np.int32)
    distance = ndi.distance_transform_edt(mask)
    min_distance = max(1, int(round(NUCLEUS_SEPARATION_UM / microns_per_pixel)))
    # the markers peak_local_max(distance, min_distance, labels=components) finds, for all nuclei at once
    peaks = watershed_peaks(distance, ndi.label(mask)[0], min_distance)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=mask)
    return _drop_small(labels, min_area)


def _haematoxylin(rgb: np.ndarray) -> np.ndarray:
    """The haematoxylin density of colour deconvolution, blurred (sigma 1 px) as the segmentation reads it."""
    return gaussian(rgb2hed(rgb[..., :3])[..., 0], sigma=1.0)


def haematoxylin_threshold(windows: list[np.ndarray]) -> float:
    """One segmentation threshold for a slide: Otsu's over the haematoxylin of sample windows (RGB, full resolution).

    Never below the floor that keeps a patch without nuclei empty.
    """
    values = np.concatenate([_haematoxylin(w).ravel() for w in windows]) if windows else np.zeros(1)
    try:
        return float(max(threshold_otsu(values), MIN_HAEMATOXYLIN))
    except ValueError:  # constant
        return MIN_HAEMATOXYLIN


def _morphology_table(labels: np.ndarray, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """The 14 morphology features of every nucleus (rows, as scikit-image's regionprops gives them) and centroids.

    Moments, axes, eccentricity, orientation, extent, perimeter and the convex hull are computed for all
    nuclei at once (numba); only the skeleton is scikit-image's, per nucleus on its bounding box.
    """
    n_labels = int(labels.max())
    rows, cols = np.nonzero(labels)
    which = labels[rows, cols]
    area_px = np.bincount(which, minlength=n_labels + 1).astype(np.float64)
    present = np.flatnonzero(area_px[1:] > 0) + 1
    n = area_px[present]

    def total(values: np.ndarray) -> np.ndarray:  # exact integer sums per nucleus
        return np.bincount(which, weights=values, minlength=n_labels + 1)[present].round().astype(np.int64)

    rows64, cols64, count = rows.astype(np.int64), cols.astype(np.int64), n.astype(np.int64)
    sum_r, sum_c = total(rows64), total(cols64)
    # n * central second moments, exactly in integers: symmetric nuclei get exactly equal moments, so the
    # special cases of scikit-image's orientation (a == c) are decided without rounding noise
    m20 = count * total(rows64 * rows64) - sum_r * sum_r
    m02 = count * total(cols64 * cols64) - sum_c * sum_c
    m11 = count * total(rows64 * cols64) - sum_r * sum_c
    mean_r, mean_c = sum_r / n, sum_c / n
    # scikit-image's inertia tensor [[a, b], [b, c]]; b negated as a float so that b = -0.0 when m11 = 0, as
    # there: atan2(-2b, c - a) tells +0.0 from -0.0 for elongated nuclei along an axis
    a, b, c = m02 / n**2, -(m11 / n**2), m20 / n**2
    half_trace, spread = (a + c) / 2.0, np.sqrt(((a - c) / 2.0) ** 2 + b**2)
    l1, l2 = np.clip(half_trace + spread, 0, None), np.clip(half_trace - spread, 0, None)
    eccentricity = np.where(l1 == 0, 0.0, np.sqrt(1.0 - np.divide(l2, l1, out=np.zeros_like(l1), where=l1 > 0)))
    orientation = np.where(m02 == m20, np.where(m11 > 0, np.pi / 4.0, -np.pi / 4.0), 0.5 * np.arctan2(-2 * b, c - a))
    major, minor = 4.0 * np.sqrt(l1) * mpp, 4.0 * np.sqrt(l2) * mpp
    perimeter_um = np.maximum(label_perimeters(labels, n_labels)[present], 1e-6) * mpp
    objects = ndi.find_objects(labels)
    boxes = np.array([[objects[label - 1][0].start, objects[label - 1][0].stop,
                       objects[label - 1][1].start, objects[label - 1][1].stop] for label in present]).reshape(-1, 4)  # fmt: skip
    extent = n / ((boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2]))
    convex_area, convex_perimeter = hull_area_perimeter(labels, present, boxes)
    convex_perimeter = convex_perimeter * mpp
    skeleton = np.array([skeletonize(labels[objects[label - 1]] == label).sum() for label in present], dtype=np.float64)
    skeleton *= mpp
    area = n * mpp**2
    table = np.column_stack(
        [
            area,
            perimeter_um,
            eccentricity,
            major,
            minor,
            n / convex_area,
            extent,
            orientation,
            4.0 * np.pi * area / perimeter_um**2,
            np.where(minor > 0, major / np.where(minor > 0, minor, 1.0), 1.0),
            convex_area * mpp**2,
            convex_perimeter / perimeter_um,
            skeleton,
            convex_perimeter,
        ]
    )
    return table, np.column_stack([mean_r, mean_c])


def _topology(centroids: np.ndarray, patch_side_um: float) -> list[float]:
    """Mean over nuclei of the mean / max / min distance to their Delaunay neighbours (µm)."""
    if len(centroids) < 3:
        return [patch_side_um] * 3  # no triangulation: neighbours are at least a patch away
    try:
        triangulation = Delaunay(centroids)
    except Exception:  # noqa: BLE001 - collinear points: qhull refuses
        return [patch_side_um] * 3
    indptr, indices = triangulation.vertex_neighbor_vertices
    counts = np.diff(indptr)
    owner = np.repeat(np.arange(len(centroids)), counts)
    d = np.linalg.norm(centroids[indices] - centroids[owner], axis=1)
    starts = indptr[:-1][counts > 0]  # a nucleus qhull left out (a duplicate centre) has no neighbours
    stats = np.column_stack([np.add.reduceat(d, starts) / counts[counts > 0],
                             np.maximum.reduceat(d, starts), np.minimum.reduceat(d, starts)])  # fmt: skip
    return stats.mean(axis=0).tolist()


def nuclei_features(patches: np.ndarray, microns_per_pixel: float, n_jobs: int | None = None) -> np.ndarray:
    """Nuclei features of RGB patches ``(n, h, w, 3)`` -> ``(n, 18)`` float32.

    Per patch: the 14 morphology features averaged over its nuclei, 3 Delaunay topology features and the
    number of nuclei. A patch without nuclei gets zeros for morphology. ``n_jobs`` threads (joblib;
    ``None`` or 1: serial, -1: all cores) share the patches: the numba kernels and most of scikit-image's
    filters release the GIL, and threads start without the ~1 s of a new process importing the package.

    Morphology (µm, µm²): area, perimeter, eccentricity, major and minor axis length, solidity, extent,
    orientation, circularity (4πA/P²), aspect ratio (major/minor), convex area, convexity (convex
    perimeter / perimeter), skeleton length, convex perimeter.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> patches = st.pp.extract_patches(adata[:2])
    >>> st.pp.nuclei_features(patches, microns_per_pixel=0.69).shape
    (2, 18)
    """
    if n_jobs not in (None, 1) and len(patches) >= 8:
        from joblib import Parallel, delayed, effective_n_jobs

        chunks = np.array_split(patches, 4 * effective_n_jobs(n_jobs))
        parts = Parallel(n_jobs=n_jobs, prefer="threads")(
            delayed(nuclei_features)(c, microns_per_pixel) for c in chunks if len(c)
        )
        return np.concatenate(parts, axis=0)
    out = np.zeros((len(patches), len(MORPHOLOGY) + len(TOPOLOGY) + 1), dtype=np.float32)
    side_um = patches.shape[1] * microns_per_pixel
    for i, patch in enumerate(patches):
        table, centroids = _morphology_table(segment_nuclei(patch, microns_per_pixel), microns_per_pixel)
        if len(table):
            out[i, : len(MORPHOLOGY)] = table.mean(axis=0)
        out[i, len(MORPHOLOGY) : -1] = _topology(centroids * microns_per_pixel, side_um)
        out[i, -1] = len(table)
    return out
