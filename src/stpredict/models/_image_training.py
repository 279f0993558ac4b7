"""Training a CNN on spot patches, on the shared Lightning loop (train_encoder, SEPAL and TRIPLEX pretraining).

Augmentations respect what does not change in histology: the 8 dihedral orientations, small stain/colour
shifts, and (contrastive mode) random resized crops.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .._logging import logger
from ._data import Key
from ._train import TensorDictDataset, TrainSettings, fit_network


def resized_patches(
    batches: Iterable[tuple[str, np.ndarray, np.ndarray]], n_spots: int, input_size: int
) -> torch.Tensor:
    """Every spot's patch resized to the network input, ``(n_spots, 3, s, s)`` float in [0, 1].

    ``batches`` yields ``(library_id, spot positions, uint8 patches)`` as ``iter_slide_patches`` does;
    patches are resized batch by batch, so full-size patches of one batch only are in memory at a time.
    """
    images = torch.empty((n_spots, 3, input_size, input_size), dtype=torch.float32)
    for _, positions, patches in batches:
        batch = torch.from_numpy(np.ascontiguousarray(patches[..., :3])).permute(0, 3, 1, 2).float() / 255.0
        images[torch.from_numpy(positions)] = F.interpolate(
            batch, size=(input_size, input_size), mode="bilinear", antialias=True
        )
    return images


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of images ``(n, 3, s, s)``."""
    return tuple(images.mean(dim=(0, 2, 3)).tolist()), tuple(images.std(dim=(0, 2, 3)).tolist())


def standardise_images(images: torch.Tensor) -> tuple[torch.Tensor, tuple[float, ...], tuple[float, ...]]:
    """Images scaled to zero mean and unit variance per channel, with the channel means and deviations."""
    mean, std = channel_stats(images)
    scaled = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return scaled, mean, std


def dihedral(x, turns, mirror):
    """Rotate image ``i`` by ``turns[i]`` quarter turns, then mirror it where ``mirror[i]``.

    Exact pixel moves, batched over the (at most 8) groups of images sharing an orientation.
    """
    out = torch.empty_like(x)
    for k in range(4):
        for flip in (False, True):
            chosen = (turns == k) & (mirror == flip)
            if chosen.any():
                rotated = torch.rot90(x[chosen], k, dims=(2, 3))
                out[chosen] = torch.flip(rotated, dims=(3,)) if flip else rotated
    return out


def random_dihedral(x: torch.Tensor) -> torch.Tensor:
    """Each image of ``x`` in one of its 8 orientations, drawn from torch's generator (seeded by the loop)."""
    n = x.shape[0]
    turns = torch.randint(0, 4, (n,)).to(x.device)
    mirror = (torch.rand(n) < 0.5).to(x.device)
    return dihedral(x, turns, mirror)


def dihedral_average(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn`` averaged over the 8 orientations of every image of ``x`` (test-time augmentation)."""
    n = x.shape[0]
    outputs = []
    for k in range(4):
        for flip in (False, True):
            same = torch.full((n,), k, device=x.device), torch.full((n,), flip, device=x.device)
            outputs.append(fn(dihedral(x, *same)))
    return torch.stack(outputs).mean(dim=0)


def _resized_crop(x, generator):
    """SimCLR's random resized crop: a random square covering 50-100 % of each patch, resized to full size.

    One batched bilinear resampling (``affine_grid`` + ``grid_sample``) on ``x``'s device.
    """
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
    n = x.shape[0]
    if crop:
        x = _resized_crop(x, generator)
    turns = torch.randint(0, 4, (n,), generator=generator).to(x.device)
    mirror = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    x = dihedral(x, turns, mirror)
    # per-image, per-channel stain variation (on normalised values)
    gain = 1 + 0.1 * torch.randn(n, 3, 1, 1, generator=generator)
    shift = 0.1 * torch.randn(n, 3, 1, 1, generator=generator)
    return x * gain.to(x.device, x.dtype) + shift.to(x.device, x.dtype)


def _nt_xent(z1, z2, temperature: float):
    """SimCLR's normalised temperature-scaled cross-entropy over the 2n views of a batch."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    similarity = z @ z.T / temperature
    n = len(z1)
    similarity.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(similarity, targets)


@torch.no_grad()
def run_in_batches(fn, images: torch.Tensor, *, device: str = "cpu", batch_size: int = 256) -> list[torch.Tensor]:
    """``fn`` (a frozen network, in eval mode) on ``images`` in batches on ``device``: float32 CPU outputs.

    bfloat16 autocast on a GPU; one output per batch (none for no images).

    Examples
    --------
    >>> import torch
    >>> from stpredict.models._image_training import run_in_batches
    >>> [t.shape for t in run_in_batches(lambda x: x.mean((2, 3)), torch.zeros(5, 3, 8, 8), batch_size=2)]
    [torch.Size([2, 3]), torch.Size([2, 3]), torch.Size([1, 3])]
    """
    on_gpu = str(device).startswith("cuda")
    out = []
    for start in range(0, len(images), batch_size):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu):
            out.append(fn(images[start : start + batch_size].to(device)).float().cpu())
    return out


class ImageObjective(nn.Module):
    """A pretraining stage as a net the shared Lightning loop (:func:`~._train.fit_network`) trains.

    ``training_loss`` augments the batch's patches and returns the MSE of the network's regression on the
    targets (``y``) or, without targets, SimCLR's NT-Xent between two augmented crops of each patch;
    ``optimizer`` is AdamW with a cosine schedule over the stage's epochs. Augmentations are drawn from a CPU
    generator seeded by ``random_state``, so runs repeat on any device.
    """

    def __init__(self, network: nn.Module, *, epochs: int, temperature: float, random_state: int) -> None:
        super().__init__()
        self.network = network
        self.epochs, self.temperature = epochs, temperature
        self.generator = torch.Generator().manual_seed(random_state)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        images = batch[Key.PIXELS]
        if len(images) < 2:  # batch norm needs two images: the loop skips this batch
            return None
        if Key.Y in batch:
            return F.mse_loss(self.network(_augment(images, self.generator, crop=False)), batch[Key.Y])
        views = _augment(images, self.generator, crop=True), _augment(images, self.generator, crop=True)
        return _nt_xent(self.network(views[0]), self.network(views[1]), self.temperature)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.network(batch[Key.PIXELS])

    def optimizer(self, settings: TrainSettings):
        optimiser = torch.optim.AdamW(self.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, self.epochs))
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}


def train_image_network(
    network: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor | None,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    temperature: float = 0.2,
    device: str = "cpu",
    random_state: int = 0,
    show_progress_bar: bool = False,
    desc: str = "train encoder",
    trainer_params: Mapping[str, Any] | None = None,
    precision: str = "auto",
) -> list[float]:
    """Train ``network`` (encoder + head) on standardised ``images``; the mean loss of every epoch.

    With ``targets`` (``(n, n_genes)``, z-scored) the loss is the MSE of the head's regression on augmented
    patches; without, the NT-Xent loss between two augmented crops of each patch (SimCLR). AdamW with a
    cosine schedule over ``epochs``; batches and augmentations are drawn from ``random_state``. Runs on the
    shared Lightning loop, so a pretraining stage gets the device placement, mixed precision
    (``precision``) and DDP (``trainer_params``) of every other training; it has no validation split and
    keeps its last epoch.
    """
    if epochs == 0:  # e.g. fine-tuning switched off: the network stays as it was given
        network.eval()
        return []
    logger.info("%s: %d images, %d epochs", desc, len(images), epochs)
    objective = ImageObjective(network, epochs=epochs, temperature=temperature, random_state=random_state)
    objective.train()  # Lightning keeps a module's mode: a trunk loaded in eval mode would train with frozen BN
    tensors = {Key.PIXELS: images} if targets is None else {Key.PIXELS: images, Key.Y: targets}
    settings = TrainSettings(
        lr=lr, weight_decay=weight_decay, max_epochs=epochs, batch_size=batch_size, precision=precision
    )
    result = fit_network(
        objective,
        TensorDictDataset(**{str(k): v for k, v in tensors.items()}),
        None,
        settings=settings,
        device=device,
        random_state=random_state,
        trainer_params=trainer_params,
        show_progress_bar=show_progress_bar,
    )
    network.eval()
    return [float(v) for v in result.history.get("train_loss", pd.Series(dtype=float))]
