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
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.measure import perimeter, regionprops
from skimage.morphology import skeletonize
from skimage.segmentation import watershed

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


def segment_nuclei(patch: np.ndarray, microns_per_pixel: float) -> np.ndarray:
    """Label image of the nuclei of one RGB patch (0 = background).

    Examples
    --------
    >>> import numpy as np, stpredict as st
    >>> patch = np.full((64, 64, 3), (235, 180, 210), dtype=np.uint8)
    >>> patch[20:30, 20:30] = (60, 50, 140)  # one haematoxylin-dark blob
    >>> int(st.pp.segment_nuclei(patch, microns_per_pixel=0.5).max())
    1
    """
    haematoxylin = gaussian(rgb2hed(patch[..., :3])[..., 0], sigma=1.0)
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
    peaks = peak_local_max(distance, min_distance=min_distance, labels=ndi.label(mask)[0], exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=mask)
    return _drop_small(labels, min_area)


def _morphology(region, mpp: float) -> list[float]:
    area = region.area * mpp**2
    per = max(region.perimeter, 1e-6) * mpp
    major, minor = region.axis_major_length * mpp, region.axis_minor_length * mpp
    convex_perimeter = perimeter(region.image_convex) * mpp
    skeleton = float(skeletonize(region.image).sum()) * mpp
    return [
        area,
        per,
        region.eccentricity,
        major,
        minor,
        region.solidity,
        region.extent,
        region.orientation,
        4.0 * np.pi * area / per**2,
        major / minor if minor > 0 else 1.0,
        region.area_convex * mpp**2,
        convex_perimeter / per,
        skeleton,
        convex_perimeter,
    ]


def _topology(centroids: np.ndarray, patch_side_um: float) -> list[float]:
    """Mean over nuclei of the mean / max / min distance to their Delaunay neighbours (µm)."""
    if len(centroids) < 3:
        return [patch_side_um] * 3  # no triangulation: neighbours are at least a patch away
    try:
        triangulation = Delaunay(centroids)
    except Exception:  # noqa: BLE001 - collinear points: qhull refuses
        return [patch_side_um] * 3
    indptr, indices = triangulation.vertex_neighbor_vertices
    stats = []
    for i in range(len(centroids)):
        neighbours = indices[indptr[i] : indptr[i + 1]]
        d = np.linalg.norm(centroids[neighbours] - centroids[i], axis=1)
        stats.append((d.mean(), d.max(), d.min()))
    return np.mean(stats, axis=0).tolist()


def nuclei_features(patches: np.ndarray, microns_per_pixel: float, n_jobs: int | None = None) -> np.ndarray:
    """Nuclei features of RGB patches ``(n, h, w, 3)`` -> ``(n, 18)`` float32.

    Per patch: the 14 morphology features averaged over its nuclei, 3 Delaunay topology features and the
    number of nuclei. A patch without nuclei gets zeros for morphology. ``n_jobs`` processes (joblib;
    ``None`` or 1: serial, -1: all cores) share the patches.

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
        parts = Parallel(n_jobs=n_jobs)(delayed(nuclei_features)(c, microns_per_pixel) for c in chunks if len(c))
        return np.concatenate(parts, axis=0)
    out = np.zeros((len(patches), len(MORPHOLOGY) + len(TOPOLOGY) + 1), dtype=np.float32)
    side_um = patches.shape[1] * microns_per_pixel
    for i, patch in enumerate(patches):
        regions = regionprops(segment_nuclei(patch, microns_per_pixel))
        if regions:
            out[i, : len(MORPHOLOGY)] = np.mean([_morphology(r, microns_per_pixel) for r in regions], axis=0)
        centroids = np.array([r.centroid for r in regions]).reshape(-1, 2) * microns_per_pixel
        out[i, len(MORPHOLOGY) : -1] = _topology(centroids, side_um)
        out[i, -1] = len(regions)
    return out
