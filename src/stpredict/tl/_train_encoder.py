"""Train an image encoder on the user's own slides: no pretrained weights needed.

- ``mode='supervised'``: the encoder and a linear head regress the (z-scored) target genes of each spot's
  patch, as MERGE and SEPAL fine-tune their encoders on the regression task.
- ``mode='simclr'``: self-supervised contrastive learning between two augmentations of each patch (NT-Xent),
  as MERGE's encoder was pretrained; no expression is used.

Augmentations respect what does not change in histology: the 8 dihedral orientations, small stain/colour
shifts, and (SimCLR) random resized crops.
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
from tqdm.auto import tqdm

from .._device import resolve_device
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
            path,
        )
        return path

    def embed(self, adata: AnnData, *, batch_size: int = 128, device: str = "auto") -> np.ndarray:
        """Embeddings ``(n_obs, dim)`` of every spot of ``adata`` (slides read one at a time)."""
        resolved = resolve_device(device, needed=True)
        out = np.empty((adata.n_obs, self.spec.dim), dtype=np.float32)
        for _, positions, patches in iter_slide_patches(adata, size=self.size, unit=self.unit, batch_size=batch_size):
            out[positions] = embed_patches(self.model, self.spec, patches, resolved)
        return out


def _training_images(adata: AnnData, *, size: float, unit: str, input_size: int):
    """Every spot's patch resized to the network input, ``(n_obs, 3, input_size, input_size)`` float in [0, 1].

    Resized batch by batch, so full-size patches of only one batch are in memory at a time.
    """
    import torch
    import torch.nn.functional as F

    images = torch.empty((adata.n_obs, 3, input_size, input_size), dtype=torch.float32)
    for _, positions, patches in iter_slide_patches(adata, size=size, unit=unit):
        batch = torch.from_numpy(patches[..., :3]).permute(0, 3, 1, 2).float() / 255.0
        images[torch.from_numpy(positions)] = F.interpolate(
            batch, size=(input_size, input_size), mode="bilinear", antialias=True
        )
    return images


def _dihedral(x, turns, mirror):
    """Rotate image ``i`` by ``turns[i]`` quarter turns, then mirror it where ``mirror[i]``.

    Exact pixel moves, batched over the (at most 8) groups of images sharing an orientation.
    """
    import torch

    out = torch.empty_like(x)
    for k in range(4):
        for flip in (False, True):
            chosen = (turns == k) & (mirror == flip)
            if chosen.any():
                rotated = torch.rot90(x[chosen], k, dims=(2, 3))
                out[chosen] = torch.flip(rotated, dims=(3,)) if flip else rotated
    return out


def _resized_crop(x, generator):
    """SimCLR's random resized crop: a random square covering 50-100 % of each patch, resized to full size.

    One batched bilinear resampling (``affine_grid`` + ``grid_sample``) on ``x``'s device.
    """
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    side = torch.empty(n).uniform_(0.5, 1.0, generator=generator).sqrt()  # crop side / patch side
    corner = torch.rand(n, 2, generator=generator) * (1 - side[:, None])  # top-left corner, in patch sides
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = side
    theta[:, :, 2] = side[:, None] + 2 * corner - 1  # normalised coordinates, align_corners=False
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _augment(x, generator, *, crop: bool):
    """Random dihedral transform, colour shift and (optionally) resized crop of a batch ``(n, 3, s, s)``.

    Batched on ``x``'s device (the GPU when training there) rather than looping over images; random draws
    come from the CPU ``generator`` so that runs repeat on any device.
    """
    import torch

    n = x.shape[0]
    if crop:
        x = _resized_crop(x, generator)
    turns = torch.randint(0, 4, (n,), generator=generator).to(x.device)
    mirror = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    x = _dihedral(x, turns, mirror)
    # per-image, per-channel stain variation (on normalised values)
    gain = 1 + 0.1 * torch.randn(n, 3, 1, 1, generator=generator)
    shift = 0.1 * torch.randn(n, 3, 1, 1, generator=generator)
    return x * gain.to(x.device, x.dtype) + shift.to(x.device, x.dtype)


def _nt_xent(z1, z2, temperature: float):
    """SimCLR's normalised temperature-scaled cross-entropy over the 2n views of a batch."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(torch.cat([z1, z2]), dim=1)
    similarity = z @ z.T / temperature
    n = len(z1)
    similarity.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(similarity, targets)


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
    import torch.nn.functional as F

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
    generator = torch.Generator().manual_seed(random_state)

    images = _training_images(adata, size=size, unit=unit, input_size=input_size)
    mean, std = images.mean(dim=(0, 2, 3)), images.std(dim=(0, 2, 3))
    images = (images - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    spec = replace(spec, input_size=input_size, mean=tuple(mean.tolist()), std=tuple(std.tolist()))

    backbone = build_backbone(spec, pretrained=False)
    if spec.dim < 0:
        spec = replace(spec, dim=int(backbone.num_features))
    if mode == "supervised":
        head = nn.Linear(spec.dim, targets.shape[1])
    else:
        head = nn.Sequential(nn.Linear(spec.dim, spec.dim), nn.ReLU(), nn.Linear(spec.dim, 128))
    network = nn.Sequential(backbone, head).to(resolved)
    optimiser = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, epochs))
    history: list[float] = []
    started = time.perf_counter()
    for _ in tqdm(range(epochs), desc=f"train encoder ({mode})", disable=not show_progress_bar):
        network.train()
        order = torch.randperm(len(images), generator=generator)
        losses = []
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:
                continue
            if mode == "supervised":
                x = _augment(images[idx].to(resolved), generator, crop=False)
                loss = F.mse_loss(network(x), targets[idx].to(resolved))
            else:
                batch = images[idx].to(resolved)
                v1 = _augment(batch, generator, crop=True)
                v2 = _augment(batch, generator, crop=True)
                loss = _nt_xent(network(v1), network(v2), temperature)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        scheduler.step()
        history.append(float(np.mean(losses)))
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
