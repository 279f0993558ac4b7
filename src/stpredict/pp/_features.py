"""Per-spot image representations written to ``obsm['X_<name>']``."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from os import PathLike
from typing import Any, Literal

import numpy as np
from anndata import AnnData
from skimage.color import rgb2hed
from skimage.feature import graycomatrix, graycoprops
from tqdm.auto import tqdm

from .._constants import LIBRARY_KEY, representation_key
from .._device import resolve_device
from .._distributed import map_slides, resolve_client, rows_in_order, slide_parts
from .._docs import doc_params
from .._logging import logger, warn
from .._recipe import FeatureRecipe
from .._validate import check_adata, library_ids
from ._encoders import ENCODERS, embed_patches, encoder_spec, load_encoder
from ._loader import patch_batches
from ._nuclei import nuclei_feature_names, nuclei_features
from ._patches import slide_mpp
from ._stain import normalize_stain, slide_stains

_PERCENTILES = (10, 50, 90)
_GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
_GLCM_DISTANCES = (1, 3)
_GLCM_LEVELS = 32
# Statistics are computed on every other pixel of a 224 px patch (112 x 112 samples): colour
# distributions and texture at this scale barely change, and it is ~4x faster.
_SAMPLED_SIDE = 112


def handcrafted_feature_names() -> list[str]:
    """Names of the columns produced by :func:`handcrafted_features`.

    Examples
    --------
    >>> import stpredict as st
    >>> names = st.pp.handcrafted_feature_names()
    >>> len(names), names[0], names[-1]
    (44, 'rgb_R_mean', 'haematoxylin_fraction')
    """
    names = []
    for space, channels in (("rgb", "RGB"), ("hed", "HED")):
        for ch in channels:
            names += [f"{space}_{ch}_mean", f"{space}_{ch}_std"] + [f"{space}_{ch}_p{q}" for q in _PERCENTILES]
    names += [f"glcm_{prop}_d{d}" for prop in _GLCM_PROPS for d in _GLCM_DISTANCES]
    names += ["grad_mean", "grad_std", "tissue_fraction", "haematoxylin_fraction"]
    return names


def _channel_stats(values: np.ndarray) -> np.ndarray:
    """(n, pixels, channels) -> (n, channels * (2 + len(percentiles)))."""
    mean = values.mean(axis=1)
    std = values.std(axis=1)
    pct = np.percentile(values, _PERCENTILES, axis=1)  # (q, n, c)
    stats = np.concatenate([mean[None], std[None], pct], axis=0)  # (2+q, n, c)
    return stats.transpose(1, 2, 0).reshape(len(values), -1)


def handcrafted_features(patches: np.ndarray) -> np.ndarray:
    """Colour and texture statistics of RGB patches ``(n, h, w, 3)`` uint8 -> ``(n, 44)`` float32.

    Computed on every other pixel of patches larger than 112 px. Colour: mean, std and 10/50/90th percentiles of R, G, B and of the haematoxylin, eosin and DAB
    channels of colour deconvolution (Ruifrok & Johnston, ``skimage.color.rgb2hed``). Texture: grey-level
    co-occurrence contrast, dissimilarity, homogeneity, energy and correlation at distances 1 and 3 (32
    grey levels, averaged over 0° and 90°), mean and std of the gradient magnitude; plus the fraction of
    tissue (non-white) pixels and of haematoxylin-dominated pixels.

    Examples
    --------
    >>> import numpy as np, stpredict as st
    >>> white = np.full((1, 224, 224, 3), 255, dtype=np.uint8)
    >>> features = st.pp.handcrafted_features(white)
    >>> features.shape, float(features[0, st.pp.handcrafted_feature_names().index("tissue_fraction")])
    ((1, 44), 0.0)
    """
    n = len(patches)
    step = max(1, patches.shape[1] // _SAMPLED_SIDE)
    sampled = np.ascontiguousarray(patches[:, ::step, ::step, :3])
    rgb = sampled.reshape(n, -1, 3).astype(np.float32) / 255.0
    hed = rgb2hed(sampled.reshape(-1, sampled.shape[2], 3)).reshape(n, -1, 3).astype(np.float32)
    colour = np.concatenate([_channel_stats(rgb), _channel_stats(hed)], axis=1)

    grey = (sampled.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)
    levels = np.clip(grey / 256.0 * _GLCM_LEVELS, 0, _GLCM_LEVELS - 1).astype(np.uint8)
    texture = np.empty((n, len(_GLCM_PROPS) * len(_GLCM_DISTANCES)), dtype=np.float32)
    for i in range(n):
        glcm = graycomatrix(
            levels[i], _GLCM_DISTANCES, (0.0, np.pi / 2), levels=_GLCM_LEVELS, symmetric=True, normed=True
        )
        texture[i] = np.concatenate([graycoprops(glcm, prop).mean(axis=1) for prop in _GLCM_PROPS])
    texture = np.nan_to_num(texture, nan=0.0)  # GLCM correlation is undefined on flat (e.g. all-white) patches
    gy, gx = np.gradient(grey, axis=(1, 2))
    magnitude = np.hypot(gx, gy).reshape(n, -1)
    grey_flat = grey.reshape(n, -1)
    tissue = (grey_flat < 220).mean(axis=1)
    haematoxylin = (hed[:, :, 0] > hed[:, :, 1]).mean(axis=1)
    extra = np.column_stack([magnitude.mean(axis=1), magnitude.std(axis=1), tissue, haematoxylin])
    return np.concatenate([colour, texture, extra], axis=1).astype(np.float32)


_METHODS = {
    # name: (extractor(patches, microns_per_pixel, n_jobs) -> (n, d), feature names)
    "handcrafted": (lambda patches, mpp, n_jobs: handcrafted_features(patches), handcrafted_feature_names),
    "nuclei": (nuclei_features, nuclei_feature_names),
}


def _microns_per_pixel(adata: AnnData, library_id: str, method: str) -> float:
    mpp = slide_mpp(adata, library_id)
    if method == "nuclei" and mpp is None:
        msg = (
            f"Nuclei features need the scan resolution: slide {library_id!r} has no "
            "uns['spatial'][lib]['scalefactors']['microns_per_pixel']."
        )
        raise KeyError(msg)
    return mpp if mpp is not None else float("nan")


def _extractor(method: str, checkpoint, pretrained: bool, device: str, preprocessing=None):
    """``(extract(patches, microns_per_pixel, n_jobs) -> features, feature names, preprocessing)`` for a method.

    ``preprocessing`` is the encoder's resolved input preparation and output (``None`` for the methods that
    use no network); it is part of the recipe, so a model trained on one encoder's features refuses another's.
    """
    if method in _METHODS:
        if preprocessing:
            msg = f"preprocessing= applies to encoders; method {method!r} uses no network."
            raise ValueError(msg)
        extract, names = _METHODS[method]
        return extract, names(), None
    try:
        spec = encoder_spec(method)
    except ValueError:
        msg = (
            f"Unknown image feature method {method!r}; available: {sorted(_METHODS)}, {sorted(ENCODERS)}, "
            "'timm:<model>' or 'hf:<model id>'."
        )
        raise ValueError(msg) from None
    model, spec = load_encoder(spec.name, checkpoint=checkpoint, pretrained=pretrained, preprocessing=preprocessing)
    resolved = resolve_device(device, needed=True)
    return (
        (lambda patches, mpp, n_jobs: embed_patches(model, spec, patches, resolved)),
        [f"{method}_{i}" for i in range(spec.dim)],
        spec.preprocessing(),
    )


def file_sha256(path: str | PathLike) -> str:
    """SHA-256 of a file (identifies encoder weights independently of where the file lives)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def compute_image_features(
    adata: AnnData,
    *,
    method: str = "handcrafted",
    size: float = 224,
    unit: str = "px",
    batch_size: int | None = None,
    library_key: str = LIBRARY_KEY,
    n_jobs: int | None = None,
    checkpoint: str | PathLike | None = None,
    pretrained: bool = False,
    device: str = "auto",
    show_progress_bar: bool = False,
    return_names: bool = False,
    target_mpp: float | None = None,
    stain_reference: Mapping[str, Any] | None = None,
    client: Any = None,
    preprocessing: Mapping[str, Any] | None = None,
    return_preprocessing: bool = False,
    cache_dir: str | PathLike | None = None,
    num_workers: int = 0,
    segmentation: str | None = None,
) -> np.ndarray | tuple:
    """The representation of :func:`image_features` as an array, without writing.

    With ``return_names``, also its feature names; with ``return_preprocessing``, the names and the encoder's
    resolved preprocessing. ``cache_dir`` (default ``st.settings.feature_cache_dir``): read and write the
    on-disk feature cache (:mod:`._feature_cache`; on a dask cluster the workers use it: give a folder they
    all see). ``segmentation``: nuclei from a segmentation the slides record (``method='nuclei'`` only).
    """
    batch_size = default_batch_size(method, device) if batch_size is None else int(batch_size)
    if segmentation is not None:
        return _from_segmentation(adata, method, segmentation, size, unit, target_mpp, library_key, return_names,
                                  return_preprocessing)  # fmt: skip
    options = {
        "method": method, "size": size, "unit": unit, "batch_size": batch_size, "library_key": library_key,
        "n_jobs": n_jobs, "checkpoint": checkpoint, "pretrained": pretrained, "device": device,
        "target_mpp": target_mpp, "stain_reference": stain_reference, "preprocessing": preprocessing,
        "num_workers": num_workers,
    }  # fmt: skip
    client = resolve_client(client)
    if client is not None:  # the workers read and write the cache: a folder they all see
        features, names, resolved = _on_cluster(adata, client, {**options, "cache_dir": _cache_root(cache_dir)})
        return _returned(features, names, resolved, return_names, return_preprocessing)
    if adata.n_obs == 0:
        msg = "adata has no spots."
        raise ValueError(msg)
    cache = _feature_cache(cache_dir, options)
    slides, cached, features = cache.lookup(adata, library_key) if cache else ({}, np.zeros(adata.n_obs, bool), None)
    known = cache.names_and_preprocessing() if cache else None
    if cached.all() and known is not None:  # everything cached: no model to load, no patch to read
        return _returned(features, *known, return_names, return_preprocessing)
    extractor, names, resolved = _extractor(method, checkpoint, pretrained, device, preprocessing)
    if cache:
        cache.record_names_and_preprocessing(names, resolved)
    todo = np.flatnonzero(~cached)
    stains = slide_stains(adata, size=size, unit=unit, target_mpp=target_mpp) if stain_reference is not None else None
    source = adata if len(todo) == adata.n_obs else adata[todo]
    batches = patch_batches(
        source, size=size, unit=unit, library_key=library_key, batch_size=batch_size, target_mpp=target_mpp,
        num_workers=num_workers, pin_memory=str(device).startswith("cuda"),
    )  # fmt: skip
    with tqdm(total=adata.n_obs, initial=adata.n_obs - len(todo), desc=f"image features ({method})",
              unit="patch", disable=not show_progress_bar) as bar:  # fmt: skip
        for library_id, positions, patches in batches:
            if stains is not None:
                patches = normalize_stain(patches, stains[library_id], stain_reference)
            mpp = target_mpp if target_mpp is not None else _microns_per_pixel(adata, library_id, method)
            values = extractor(patches, mpp, n_jobs)
            if features is None:
                features = np.full((adata.n_obs, values.shape[1]), np.nan, dtype=np.float32)
            rows = todo[positions]
            features[rows] = values
            if cache:
                slide_rows, digest = slides[str(library_id)]
                cache.store(digest, len(slide_rows), np.searchsorted(slide_rows, rows), values)
            bar.update(len(positions))
    return _returned(features, names, resolved, return_names, return_preprocessing)


def resolve_target_mpp(adata: AnnData, method: str, target_mpp, unit: str, library_key: str = LIBRARY_KEY):
    """``'native'`` -> the encoder's training resolution (or ``None``: the slides' own pixels)."""
    if target_mpp != "native":
        return target_mpp
    native = ENCODERS[method].native_mpp if method in ENCODERS else None
    if native is None:
        return None
    unknown = [lib for lib in library_ids(adata, library_key) if slide_mpp(adata, lib) is None]
    if unknown:
        warn(
            f"{method} was trained on {native:g} µm/px tiles, but slides {unknown[:3]} record no µm per pixel: "
            "patches are read at the slides' own pixels. Set their scalefactors['microns_per_pixel'], or pass "
            "target_mpp=None to silence this."
        )
        return None
    logger.info("image_features: %s reads patches at its training resolution, %g µm/px (target_mpp='native')",
                method, native)  # fmt: skip
    return float(native)


#: patches per batch of a neural encoder: on the CPU a large batch is no faster and holds far more memory
CPU_ENCODER_BATCH, GPU_ENCODER_BATCH = 32, 256


def default_batch_size(method: str, device: str) -> int:
    """Patches read (and encoded) at once when ``batch_size`` is not given: by the device the encoder runs on."""
    if method in ("handcrafted", "nuclei"):  # no network: the batch only bounds the patches held
        return GPU_ENCODER_BATCH
    from .._device import resolve_device

    try:
        on_cpu = resolve_device(str(device), needed=True) == "cpu"
    except RuntimeError:  # a GPU asked for and absent: the encoder says so when it is built (cached runs need none)
        on_cpu = True
    return CPU_ENCODER_BATCH if on_cpu else GPU_ENCODER_BATCH


def _feature_cache(cache_dir, options: Mapping[str, Any]):
    """The feature cache of this recipe (``cache_dir``, else ``st.settings.feature_cache_dir``), or ``None``."""
    from ._feature_cache import FeatureCache

    root = _cache_root(cache_dir)
    if root is None:
        return None
    return FeatureCache(root, _recipe(options))


def _from_segmentation(adata, method, segmentation, size, unit, target_mpp, library_key, return_names, return_prep):
    """Nuclei features from the slides' recorded segmentation (no pixels read)."""
    from ._nuclei_shapes import segmentation_nuclei_features

    if method != "nuclei":
        msg = f"segmentation={segmentation!r} gives nuclei features: use method='nuclei' (got {method!r})."
        raise ValueError(msg)
    if adata.n_obs == 0:
        msg = "adata has no spots."
        raise ValueError(msg)
    features = segmentation_nuclei_features(
        adata, segmentation, size=size, unit=unit, target_mpp=target_mpp, library_key=library_key
    )
    return _returned(features, nuclei_feature_names(), None, return_names, return_prep)


def _recipe(options: Mapping[str, Any]) -> FeatureRecipe:
    """The recipe of features computed with these ``compute_image_features`` options."""
    checkpoint = options["checkpoint"]
    return FeatureRecipe(
        options["method"],
        size=options["size"],
        unit=options["unit"],
        target_mpp=options["target_mpp"],
        stain_reference=options["stain_reference"],
        checkpoint_sha256=file_sha256(checkpoint) if checkpoint is not None else None,
        pretrained=options["pretrained"],
        preprocessing=options["preprocessing"],
        segmentation=options.get("segmentation"),
        checkpoint=checkpoint,
    )


def _cache_root(cache_dir) -> str | None:
    """``cache_dir``, else ``st.settings.feature_cache_dir`` (``None``: no cache)."""
    from .._logging import settings

    root = cache_dir if cache_dir is not None else settings.feature_cache_dir
    return None if root is None else str(root)


def _returned(features, names, resolved, return_names: bool, return_preprocessing: bool):
    if return_preprocessing:
        return features, names, resolved
    return (features, names) if return_names else features


def _slide_features(part: AnnData, **options) -> tuple[np.ndarray, list[str], dict | None]:
    """Features of one slide on a worker (the image is read from its path there)."""
    return compute_image_features(part, return_preprocessing=True, **options)


def _on_cluster(adata: AnnData, client, options: dict) -> tuple[np.ndarray, list[str], dict | None]:
    """One task per slide on a dask.distributed cluster; rows back in ``adata``'s order."""
    if adata.n_obs == 0:
        msg = "adata has no spots."
        raise ValueError(msg)
    parts = slide_parts(adata, library_key=options["library_key"])
    results = map_slides(client, _slide_features, parts, **options)
    return rows_in_order(adata.n_obs, parts, [values for values, _, _ in results]), results[0][1], results[0][2]


@doc_params("copy", "library_key")
def image_features(
    adata: AnnData,
    *,
    method: str = "handcrafted",
    size: float = 224,
    unit: Literal["px", "um"] = "px",
    key_added: str | None = None,
    batch_size: int | None = None,
    library_key: str = LIBRARY_KEY,
    n_jobs: int | None = None,
    checkpoint: str | PathLike | None = None,
    pretrained: bool = False,
    device: str = "auto",
    target_mpp: float | Literal["native"] | None = "native",
    stain_reference: Mapping[str, Any] | None = None,
    client: Any = None,
    preprocessing: Mapping[str, Any] | None = None,
    cache_dir: str | PathLike | None = None,
    num_workers: int = 0,
    segmentation: str | None = None,
    show_progress_bar: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Compute an image representation of every spot from the patch around it.

    - ``'handcrafted'``: 44 colour and texture statistics in RGB and haematoxylin/eosin space (see
      :func:`handcrafted_features`). Needs no model weights, so it is the offline default.
    - ``'nuclei'``: M2TGLGO's 14 nuclei morphology and 3 Delaunay topology features averaged over the
      patch's nuclei, plus the nuclei count (see :func:`nuclei_features`; nuclei segmented by colour
      deconvolution, threshold and watershed, no weights). Needs ``microns_per_pixel``.
    - an encoder name (``docs/encoders.md``): pathology foundation models ``'uni'``, ``'uni2-h'``, ``'virchow'``,
      ``'virchow2'``, ``'h-optimus-0'``, ``'h-optimus-1'``, ``'h0-mini'``, ``'prov-gigapath'``, ``'phikon'``,
      ``'phikon-v2'``, ``'conch'``; torchvision CNNs ``'resnet18'``, ``'resnet50'``, ``'densenet121'``,
      ``'vit_b_16'``; ``'timm:<model>'`` or ``'hf:<model id>'``; with weights from ``checkpoint`` (a local file,
      e.g. saved by :func:`stpredict.tl.train_encoder`) or ``pretrained=True`` (download). Each runs with its
      model card's input size, normalisation, interpolation, crop and output pooling (``timm:``: the model's
      pretrained configuration); batched inference, bfloat16 autocast on GPU.

    Parameters
    ----------
    adata
        Slides with ``obsm['spatial']`` and images in ``uns['spatial']``.
    method
        Feature extractor.
    size, unit
        Patch side (default 224 full-resolution pixels).
    key_added
        ``obsm`` key; defaults to ``f'X_{method}'``.
    batch_size
        Patches processed at once (bounds memory). Default: 32 for a neural encoder on the CPU, 256 on a GPU
        and for the handcrafted and nuclei features.
    {library_key}
    n_jobs
        Parallel processes for ``'nuclei'`` (``None``/1: serial, -1: all cores), as in squidpy.
    checkpoint, pretrained
        Encoder weights (see above).
    device
        ``'auto'``, ``'cpu'`` or ``'cuda[:i]'`` for encoders.
    target_mpp
        Resample every slide's patches to this many microns per pixel first (resolution harmonisation:
        slides scanned at 0.25 and 0.5 µm/px then give the same features for the same tissue). Patches cover
        ``size`` px at ``target_mpp`` (or ``size`` µm). ``'native'`` (default): the resolution the encoder was
        trained at when its card gives one (0.5 µm/px for UNI, Virchow, H-optimus, Prov-GigaPath, Phikon:
        ``size=224`` px then covers 112 µm, as in training; said in the log), else each slide's own pixels
        (the handcrafted and nuclei features, ImageNet networks, ``timm:``/``hf:`` models). ``None``: each
        slide's own pixels always.
    stain_reference
        Macenko stain normalisation: each slide's patches are re-rendered with this reference stain (from
        :func:`stpredict.pp.stain_reference` on the training slides) before features are computed.
    client
        A ``dask.distributed`` Client (``True``: the active one) to compute slides in parallel, one slide per
        task; workers read each slide's image from its path (it must be reachable from the workers). Results
        equal the serial ones. See the "Many slides on a cluster" page.
    preprocessing
        Overrides of an encoder's input preparation and output (``input_size``, ``mean``, ``std``,
        ``interpolation``, ``resize``, ``pooling``): by default each named encoder's model card, and for
        ``'timm:<model>'`` the model's pretrained configuration. The resolved values are recorded in
        ``uns['stpredict_features'][key_added]['preprocessing']`` and checked when a model predicts.
    cache_dir
        A folder for the on-disk feature cache (default ``st.settings.feature_cache_dir``; ``None``: none):
        features are stored per slide and recipe as they are computed, so a rerun, a ``fit``/``predict`` of
        the same slides or an interrupted run resumes from what is there. Never served for another recipe
        or slide (its name, spot centres and image file are part of the key).
    segmentation
        ``method='nuclei'`` only: take nuclei from the segmentation a reader recorded for every slide under this
        name (``'cellvit'``: HEST-1k's CellViT ``cellvit_seg``, recorded by :func:`stpredict.io.read_hest`)
        instead of segmenting the pixels; the same 18 features, and the name in the recipe.
    num_workers
        DataLoader workers that read slide regions and cut patches while the model runs (0: in this
        process). On a GPU, batches arrive in pinned memory and are prefetched; a batch that does not fit in
        GPU memory is split and retried.
    show_progress_bar
        Show a progress bar over batches (serial runs).
    {copy}

    Returns
    -------
    ``None`` or the modified copy. Writes ``obsm[key_added]`` (``n_obs x n_features`` float32) and
    ``uns['stpredict_features'][key_added]`` (parameters and feature names).

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.image_features(adata, show_progress_bar=False)
    >>> adata.obsm["X_handcrafted"].shape
    (213, 44)
    """
    check_adata(adata)
    key_added = key_added or representation_key(method)
    started = time.perf_counter()
    target_mpp = resolve_target_mpp(adata, method, target_mpp, unit, library_key)
    features, names, resolved = compute_image_features(
        adata,
        method=method,
        size=size,
        unit=unit,
        batch_size=batch_size,
        library_key=library_key,
        n_jobs=n_jobs,
        checkpoint=checkpoint,
        pretrained=pretrained,
        device=device,
        show_progress_bar=show_progress_bar,
        target_mpp=target_mpp,
        stain_reference=stain_reference,
        client=client,
        preprocessing=preprocessing,
        return_preprocessing=True,
        cache_dir=cache_dir,
        num_workers=num_workers,
        segmentation=segmentation,
    )
    adata = adata.copy() if copy else adata
    adata.obsm[key_added] = features
    recipe = _recipe(
        {"method": method, "size": size, "unit": unit, "target_mpp": target_mpp, "stain_reference": stain_reference,
         "checkpoint": checkpoint, "pretrained": pretrained, "preprocessing": resolved, "segmentation": segmentation}
    )  # fmt: skip
    recipe.store(adata, key_added, n_jobs=n_jobs, feature_names=list(names))
    elapsed = time.perf_counter() - started
    logger.info(
        "image_features: added obsm[%r] (%d spots, %.1f patches/s)", key_added, adata.n_obs, adata.n_obs / elapsed
    )
    return adata if copy else None
