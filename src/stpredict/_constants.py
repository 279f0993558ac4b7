"""Key names shared across the package (squidpy's layout where one exists)."""

from __future__ import annotations

SPATIAL_KEY = "spatial"  # obsm: (x, y) spot centres in full-resolution pixels; uns: per-library images
LIBRARY_KEY = "library_id"  # obs: which slide a spot belongs to
PATIENT_KEY = "patient"  # obs: which individual a slide comes from (splits group by it)
ARRAY_ROW = "array_row"
ARRAY_COL = "array_col"
COUNTS_LAYER = "counts"
SOURCE_IMAGE_KEY = "source_image_path"  # uns['spatial'][lib]['metadata'][...] as scanpy's read_visium
MICRONS_PER_PIXEL = "microns_per_pixel"  # uns['spatial'][lib]['scalefactors'][...]
GRID_KEY = "grid"  # uns['spatial'][lib]['metadata'][...]: 'square' (legacy ST) or 'hex' (Visium)
# uns['spatial'][lib]['metadata'][...]: 'circle' (spots; the default when absent) or 'square' (Visium HD bins),
# each spot_diameter_fullres wide
SPOT_SHAPE_KEY = "spot_shape"
SPATIALDATA_STORE_KEY = "spatialdata_store"  # uns['spatial'][lib]['metadata'][...]: Zarr store of the image
SPATIALDATA_IMAGE_KEY = "spatialdata_image"  # ... and the name of the image element in it
