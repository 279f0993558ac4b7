"""Key names shared across the package (squidpy's layout where one exists)."""

from __future__ import annotations

SPATIAL_KEY = "spatial"  # obsm: (x, y) spot centres in full-resolution pixels; uns: per-library images
LIBRARY_KEY = "library_id"  # obs: which slide a spot belongs to
PATIENT_KEY = "patient"  # obs: which individual a slide comes from (splits group by it)
ARRAY_ROW = "array_row"
ARRAY_COL = "array_col"
COUNTS_LAYER = "counts"
SOURCE_IMAGE_KEY = "source_image_path"  # uns['spatial'][lib]['metadata'][...] as scanpy's read_visium
#: where readers record segmentations (``{name: {'path': ...}}``) in a slide's ``uns['spatial'][id]['metadata']``
SEGMENTATION_KEY = "nuclei_segmentation"
MICRONS_PER_PIXEL = "microns_per_pixel"  # uns['spatial'][lib]['scalefactors'][...]
GRID_KEY = "grid"  # uns['spatial'][lib]['metadata'][...]: 'square' (legacy ST) or 'hex' (Visium)
# uns['spatial'][lib]['metadata'][...]: 'circle' (spots; the default when absent) or 'square' (Visium HD bins),
# each spot_diameter_fullres wide
SPOT_SHAPE_KEY = "spot_shape"
SPATIALDATA_STORE_KEY = "spatialdata_store"  # uns['spatial'][lib]['metadata'][...]: Zarr store of the image
SPATIALDATA_IMAGE_KEY = "spatialdata_image"  # ... and the name of the image element in it


# --- keys that depend on a name: built in one place so that writers and readers agree -------------------------


def representation_key(method: str) -> str:
    """``obsm`` key of an image representation: ``'X_handcrafted'``, ``'X_uni'``, ``'X_timm:resnet18'`` ..."""
    return f"X_{method}"


def neighbour_view_key(method: str) -> str:
    """``obsm`` key of neighbour views encoded by ``method`` (their mask: ``f'{key}_mask'``)."""
    return f"X_{method}_neighbours"


def prediction_key(model: str) -> str:
    """Default ``obsm``/``layers`` key of a model's predictions: ``'pred_ridge'``, ``'pred_merge'`` ..."""
    return f"pred_{model}"


def graph_keys(key_added: str) -> tuple[str, str]:
    """``obsp`` keys of a graph written as squidpy does: ``(f'{key}_connectivities', f'{key}_distances')``."""
    return f"{key_added}_connectivities", f"{key_added}_distances"


def derived_key(key: str, suffix: str) -> str:
    """What a step writes beside ``key``: interval bounds (``'lower'``), OOD scores (``'ood'``), masks ..."""
    return f"{key}_{suffix}"
