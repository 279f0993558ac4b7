"""BLEEP's networks: image and expression projections into one embedding space, retrieval (tensors only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._data import Key
from .._image_training import random_dihedral


class ProjectionHead(nn.Module):
    """``Linear -> GELU -> Linear -> Dropout``, plus the first projection (a skip), then LayerNorm (BLEEP's head)."""

    def __init__(self, n_in: int, dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.project = nn.Linear(n_in, dim)
        self.body = nn.Sequential(nn.GELU(), nn.Linear(dim, dim), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.project(x)
        return self.norm(projected + self.body(projected))


def bleep_loss(image: torch.Tensor, spot: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """BLEEP's symmetric contrastive loss with soft targets.

    The logits are spot-image similarities over ``temperature``; the target of each pair is the softmax of
    the mean of the image-image and spot-spot similarities (times ``temperature``), so that look-alike spots
    in a batch are not pushed apart as strict negatives.
    """
    logits = spot @ image.T / temperature
    targets = F.softmax((image @ image.T + spot @ spot.T) / 2 * temperature, dim=-1)
    spots_loss = -(targets * F.log_softmax(logits, dim=-1)).sum(dim=1)
    images_loss = -(targets.T * F.log_softmax(logits.T, dim=-1)).sum(dim=1)
    return ((spots_loss + images_loss) / 2).mean()


class BLEEP(nn.Module):
    """Image encoder (CNN trunk + projection) and expression projection; prediction by retrieval.

    ``forward`` embeds a batch's patches and returns, for each, the mean expression of the ``top_k`` reference
    spots whose expression embeddings are most cosine-similar (the references: ``bank``, z-scored expression
    of training spots, set by the model). ``training_loss`` is :func:`bleep_loss` on the batch's pairs.
    """

    def __init__(
        self, trunk: nn.Module, width: int, n_genes: int, *, dim: int = 256, dropout: float = 0.1,
        temperature: float = 1.0, top_k: int = 50,
    ) -> None:  # fmt: skip
        super().__init__()
        self.trunk = trunk
        self.image_projection = ProjectionHead(width, dim, dropout)
        self.spot_projection = ProjectionHead(n_genes, dim, dropout)
        self.register_buffer("pixel_mean", torch.zeros(3))
        self.register_buffer("pixel_std", torch.ones(3))
        self.register_buffer("bank", torch.zeros(0, n_genes), persistent=False)  # saved by the model
        self.temperature, self.top_k = temperature, top_k
        self._keys: tuple[tuple, torch.Tensor] | None = None
        self.register_load_state_dict_post_hook(lambda module, _: module.forget_bank_keys())

    def __setattr__(self, name: str, value) -> None:
        if name == "bank":  # a new reference bank: its keys must be embedded again
            self.__dict__["_keys"] = None
        super().__setattr__(name, value)

    def train(self, mode: bool = True) -> BLEEP:
        self.forget_bank_keys()  # the projection's weights change while training
        return super().train(mode)

    def forget_bank_keys(self) -> None:
        self._keys = None

    def bank_keys(self, dtype: torch.dtype) -> torch.Tensor:
        """The bank's normalised expression embeddings, embedded once per evaluation rather than per batch.

        Cached only without autograd in eval mode (prediction, validation); cleared on a new bank, new weights
        (``train()``, ``load_state_dict``), and keyed by device and dtype.
        """
        caching = not self.training and not torch.is_grad_enabled()
        tag = (self.bank.device, dtype, len(self.bank))
        if caching and self._keys is not None and self._keys[0] == tag:
            return self._keys[1]
        keys = F.normalize(self.spot_projection(self.bank.to(dtype)), dim=-1)
        if caching:
            self._keys = (tag, keys)
        return keys

    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = (pixels - self.pixel_mean.view(1, 3, 1, 1)) / self.pixel_std.view(1, 3, 1, 1)
        if self.training:
            pixels = random_dihedral(pixels)  # histology has no orientation (BLEEP rotates and flips)
        return self.image_projection(self.trunk(pixels))

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return bleep_loss(
            self.image_embeddings(batch[Key.PIXELS]), self.spot_projection(batch[Key.Y]), self.temperature
        )

    def retrieve(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices into ``bank`` of the ``top_k`` references of each patch, and their cosine similarities."""
        queries = F.normalize(self.image_embeddings(pixels), dim=-1)
        keys = self.bank_keys(queries.dtype)
        similarity, indices = (queries @ keys.T).topk(min(self.top_k, len(self.bank)), dim=1)
        return indices, similarity

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        indices, _ = self.retrieve(batch[Key.PIXELS])
        return self.bank[indices].mean(dim=1)
