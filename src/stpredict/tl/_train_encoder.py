"""Train an image encoder on the user's own slides: no pretrained weights needed.

- ``mode='supervised'``: the encoder and a linear head regress the (z-scored) target genes of each spot's
  patch, as MERGE and SEPAL fine-tune their encoders on the regression task.
- ``mode='simclr'``: self-supervised contrastive learning between two augmentations of each patch (NT-Xent),
  as MERGE's encoder was pretrained; no expression is used.

The training loop and augmentations live in ``models/_image_training.py`` (SEPAL's stage 1 uses them too).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
from anndata import AnnData

from .._device import resolve_device
from .._files import atomic_path
from .._logging import logger
from .._validate import as_gene_list, check_adata, check_genes_present, get_matrix
from ..pp._encoders import CHECKPOINT_FORMAT, EncoderSpec, build_backbone, embed_patches, encoder_spec
from ..pp._genes import default_genes
from ..pp._patches import iter_slide_patches


@dataclass
class TrainedEncoder:
    """An encoder trained by :func:`train_encoder`: embed slides with it, or save it as a checkpoint."""

    model: object
    spec: EncoderSpec
    history: list[float]
    mode: str
    size: float
    unit: str

    def save(self, path: str | PathLike) -> Path:
        """Write a checkpoint that ``st.pp.image_features(method=<arch>, checkpoint=path)`` reads."""
        import torch

        path = Path(path)
        with atomic_path(path) as tmp:  # never a truncated checkpoint
            torch.save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "arch": self.spec.name,
                    "mode": self.mode,
                    "input_size": self.spec.input_size,
                    "mean": list(self.spec.mean),
                    "std": list(self.spec.std),
                    "state_dict": self.model.state_dict(),
                },
                tmp,
            )
        return path

    def embed(self, adata: AnnData, *, batch_size: int = 128, device: str = "auto") -> np.ndarray:
        """Embeddings ``(n_obs, dim)`` of every spot of ``adata`` (slides read one at a time)."""
        resolved = resolve_device(device, needed=True)
        out = np.empty((adata.n_obs, self.spec.dim), dtype=np.float32)
        for _, positions, patches in iter_slide_patches(adata, size=self.size, unit=self.unit, batch_size=batch_size):
            out[positions] = embed_patches(self.model, self.spec, patches, resolved)
        return out


def train_encoder(
    adata: AnnData,
    *,
    mode: Literal["supervised", "simclr"] = "supervised",
    arch: str = "resnet18",
    layer: str | None = "log1p",
    genes: Sequence[str] | None = None,
    size: float = 224,
    unit: str = "px",
    input_size: int = 112,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    temperature: float = 0.2,
    device: str = "auto",
    random_state: int = 0,
    key_added: str | None = "X_encoder",
    save: str | PathLike | None = None,
    show_progress_bar: bool = True,
) -> TrainedEncoder:
    """Train an image encoder from scratch on the spots of ``adata`` (the training slides only).

    Parameters
    ----------
    adata
        Training slides with images (and, for ``'supervised'``, targets in ``layers[layer]``).
    mode
        ``'supervised'`` (regress target genes) or ``'simclr'`` (contrastive, no expression).
    arch
        Encoder architecture (a torchvision name of ``st.pp.ENCODERS`` or ``'timm:<model>'``), randomly
        initialised.
    layer
        Targets for ``'supervised'``.
    genes
        Target genes for ``'supervised'``; default ``adata.uns['selected']['genes']``, else the 250 most
        expressed genes.
    size, unit
        Patch side cut around each spot.
    input_size
        Side the patches are resized to for the network (112 keeps CPU training affordable).
    epochs, batch_size, lr, weight_decay
        AdamW optimisation.
    temperature
        NT-Xent temperature (``'simclr'``).
    device
        ``'auto'``, ``'cpu'`` or ``'cuda[:i]'``.
    random_state
        Seed of initialisation, batching and augmentation.
    key_added
        Write the training spots' embeddings to ``adata.obsm[key_added]`` and the run to
        ``adata.uns['stpredict_encoder'][key_added]`` (``None``: write nothing).
    save
        Also write a checkpoint there (see :meth:`TrainedEncoder.save`).
    show_progress_bar
        Show a progress bar over epochs.

    Returns
    -------
    The trained encoder; embed other slides with ``encoder.embed(adata_test)`` or
    ``st.pp.image_features(adata_test, method=arch, checkpoint=<saved file>)``.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()[:24].copy()
    >>> st.pp.normalize(adata)
    >>> encoder = st.tl.train_encoder(adata, genes=["ERBB2", "GNAS"], input_size=32, epochs=1,
    ...                               batch_size=12, show_progress_bar=False)
    >>> adata.obsm["X_encoder"].shape
    (24, 512)
    """
    import torch
    import torch.nn as nn

    from ..models._image_training import resized_patches, standardise_images, train_image_network

    check_adata(adata)
    if mode not in ("supervised", "simclr"):
        msg = f"Unknown mode {mode!r}; choose 'supervised' or 'simclr'."
        raise ValueError(msg)
    spec = encoder_spec(arch)
    targets = None
    if mode == "supervised":
        genes = as_gene_list(genes) or default_genes(adata)
        check_genes_present(adata, genes)
        values = get_matrix(adata, layer, columns=adata.var_names.get_indexer(genes))
        std = values.std(axis=0)
        targets = torch.from_numpy(((values - values.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32))
    resolved = resolve_device(device, needed=True)
    torch.manual_seed(random_state)

    patches = iter_slide_patches(adata, size=size, unit=unit)
    images, mean, std = standardise_images(resized_patches(patches, adata.n_obs, input_size))
    spec = replace(spec, input_size=input_size, mean=mean, std=std)

    backbone = build_backbone(spec, pretrained=False)
    if spec.dim < 0:
        spec = replace(spec, dim=int(backbone.num_features))
    if mode == "supervised":
        head = nn.Linear(spec.dim, targets.shape[1])
    else:
        head = nn.Sequential(nn.Linear(spec.dim, spec.dim), nn.ReLU(), nn.Linear(spec.dim, 128))
    started = time.perf_counter()
    history = train_image_network(
        nn.Sequential(backbone, head),
        images,
        targets,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        temperature=temperature,
        device=resolved,
        random_state=random_state,
        show_progress_bar=show_progress_bar,
        desc=f"train encoder ({mode})",
    )
    backbone.eval()
    encoder = TrainedEncoder(backbone.cpu(), spec, history, mode, size, unit)
    logger.info(
        "train_encoder: %s %s, %d epochs in %.0f s, loss %.3f -> %.3f",
        mode,
        arch,
        epochs,
        time.perf_counter() - started,
        history[0] if history else float("nan"),
        history[-1] if history else float("nan"),
    )
    if save is not None:
        encoder.save(save)
    if key_added is not None:
        adata.obsm[key_added] = encoder.embed(adata, device=resolved)
        adata.uns.setdefault("stpredict_encoder", {})[key_added] = {
            "mode": mode,
            "arch": arch,
            "genes": genes if mode == "supervised" else None,
            "params": {
                "size": size,
                "unit": unit,
                "input_size": input_size,
                "epochs": epochs,
                "batch_size": batch_size,
                "lr": lr,
                "weight_decay": weight_decay,
                "temperature": temperature,
                "random_state": random_state,
            },
            "history": history,
            "device": resolved,
            "checkpoint": str(save) if save is not None else None,
        }
    return encoder
