"""The one training loop of every neural model, on PyTorch Lightning.

Lightning gives device placement, mixed precision, DDP (``trainer_params={'strategy': 'ddp', 'devices': 4}``),
a time guard and the progress bar; this module adds what every model here shares: a validation split
taken from the training slides only, early stopping and best-weights selection on it, the validation
Pearson per slide, and seeding so that the same seed on CPU gives bit-identical weights.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from .._metrics import mean_pearson
from ._nn import LOSSES, check_loss
from ._params import Params


@dataclass(frozen=True)
class TrainSettings(Params):
    """Optimisation settings of the shared loop (each neural model exposes them as ``model_params``).

    A model states its own defaults as an instance (``training_defaults = TrainSettings(max_epochs=100)``).
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 200
    patience: int = 20
    max_time: float | None = None  # seconds
    batch_size: int = 128
    loss: Literal["mse", "pcc", "mse+pcc"] = "mse"
    precision: str = "auto"
    monitor: Literal["val_pcc", "val_loss"] = "val_pcc"  # PCC is what the field reports; ignores slide offsets

    def __post_init__(self) -> None:
        super().__post_init__()
        check_loss(self.loss)
        if self.max_epochs < 1 or self.patience < 1 or self.batch_size < 1:
            msg = "max_epochs, patience and batch_size must be positive."
            raise ValueError(msg)


TRAIN_DEFAULTS = TrainSettings.defaults()


@dataclass
class TrainResult:
    """What training left behind (the network holds the best weights)."""

    history: pd.DataFrame
    best_epoch: int
    best_score: float
    stopped_early: bool
    time_s: float


class TensorDictDataset(Dataset):
    """Rows of equally long tensors, yielded as dicts (batched by the default collate)."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        lengths = {len(t) for t in tensors.values()}
        if len(lengths) != 1:
            msg = f"tensors differ in length: { {k: len(t) for k, t in tensors.items()} }"
            raise ValueError(msg)
        self.tensors = tensors
        self.length = lengths.pop()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: t[i] for k, t in self.tensors.items()}


def resolve_precision(precision: str, device: str) -> str:
    """``'auto'``: bf16 mixed precision on GPUs that support it (else fp16 mixed), full fp32 on CPU."""
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _accelerator(device: str) -> dict[str, Any]:
    if device.startswith("cuda"):
        index = device.partition(":")[2]
        return {"accelerator": "cuda", "devices": [int(index)] if index else 1}
    return {"accelerator": "cpu", "devices": 1}


def _scored(net: torch.nn.Module, batch: Mapping[str, torch.Tensor]):
    """Predictions and targets of the rows of a batch that count (``batch['mask']`` when given)."""
    pred, target = net(batch), batch["y"]
    mask = batch.get("mask")
    if mask is not None:
        return pred[mask], target[mask], batch["unit"][mask]
    return pred, target, batch["unit"]


def _lightning_task(net: torch.nn.Module, settings: TrainSettings, train_loader: Callable, val_loader):
    """The LightningModule; ``train_loader(rank, world_size)`` splits the training items once DDP ranks are known."""
    import lightning.pytorch as pl

    loss_fn = LOSSES[settings.loss]

    class Task(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self._val: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

        def train_dataloader(self):
            return train_loader(self.global_rank, self.trainer.world_size)

        def val_dataloader(self):
            return val_loader or []

        def training_step(self, batch, batch_idx):
            if hasattr(self.net, "training_loss"):  # a model's own objective (e.g. TRIPLEX's fusion loss)
                loss, n_rows = (
                    self.net.training_loss(batch),
                    len(batch["y"] if "y" in batch else next(iter(batch.values()))),
                )
                if loss is None:  # the objective skips this batch (e.g. one image under batch norm)
                    return None
            else:
                pred, target, _ = _scored(self.net, batch)
                loss, n_rows = loss_fn(pred.float(), target.float()), len(target)
            self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n_rows)
            return loss

        def validation_step(self, batch, batch_idx):
            pred, target, unit = _scored(self.net, batch)
            loss = loss_fn(pred.float(), target.float())
            self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(target))
            self._val.append((pred.float().cpu().numpy(), target.float().cpu().numpy(), unit.cpu().numpy()))

        def on_validation_epoch_end(self) -> None:
            pred, target, unit = (np.concatenate(parts) for parts in zip(*self._val, strict=True))
            self._val.clear()
            self.log("val_pcc", mean_pearson(target, pred, unit), prog_bar=True)

        def configure_optimizers(self):
            if hasattr(self.net, "optimizer"):  # a model's own optimiser (e.g. ST-Net's SGD with momentum)
                return self.net.optimizer(settings)
            return torch.optim.AdamW(self.net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)

    return Task()


def _keep_best_callback(monitor: str):
    """Per-epoch history, and the weights of the best validation epoch kept in memory."""
    import lightning.pytorch as pl

    class KeepBest(pl.Callback):
        def __init__(self) -> None:
            self.rows: list[dict[str, float]] = []
            self.best: tuple[int, float, dict[str, torch.Tensor]] | None = None

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            self.rows.append({"epoch": trainer.current_epoch, **metrics})
            if monitor not in metrics:
                return
            score = metrics[monitor]
            better = self.best is None or (score < self.best[1] if monitor == "val_loss" else score > self.best[1])
            if better:
                self.best = (trainer.current_epoch, score, copy.deepcopy(pl_module.net.state_dict()))

    return KeepBest()


def _loader(
    dataset: Dataset,
    settings: TrainSettings,
    shuffle: bool,
    collate_fn,
    random_state: int | None,
    *,
    rank: int = 0,
    world_size: int = 1,
):
    """A DataLoader; under DDP (``world_size > 1``) the training items are split across ranks.

    Each rank gets a disjoint share of the training items (spots, or whole slides for graph models), reshuffled
    every epoch from ``random_state``. Validation loaders are never split: every rank scores the whole
    validation set, so all ranks see the same score and stop at the same epoch (a padded distributed sampler
    would repeat items and bias the validation Pearson).
    """
    seed = 0 if random_state is None else int(random_state)
    batch_size = 1 if collate_fn is single_item else settings.batch_size
    if world_size > 1 and shuffle:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fn, generator=generator)


def single_item(items: list[Any]) -> Any:
    """Collate for datasets whose items are whole batches already (e.g. one slide's graph)."""
    return items[0]


def fit_network(
    net: torch.nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    *,
    settings: TrainSettings,
    device: str = "cpu",
    random_state: int | None = 0,
    trainer_params: Mapping[str, Any] | None = None,
    show_progress_bar: bool = False,
    collate_fn: Callable | None = None,
) -> TrainResult:
    """Train ``net`` (``net(batch) -> (rows, genes)``; batches are dicts with ``'y'``, ``'unit'``, optional ``'mask'``).

    A net with a ``training_loss(batch)`` method is trained on that loss, one with an ``optimizer(settings)`` method
    by that optimiser (default AdamW); validation always scores ``net(batch)``.

    Early stopping and the kept weights follow ``settings.monitor`` on ``val_set`` (spots of held-out
    training groups); without a validation set the last epoch is kept.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping

    started = time.perf_counter()
    pl.seed_everything(0 if random_state is None else int(random_state), verbose=False)
    keep_best = _keep_best_callback(settings.monitor)
    callbacks: list[Any] = [keep_best]
    if val_set is not None:
        mode = "min" if settings.monitor == "val_loss" else "max"
        callbacks.append(EarlyStopping(monitor=settings.monitor, mode=mode, patience=settings.patience))
    options: dict[str, Any] = {
        **_accelerator(device),
        "precision": resolve_precision(settings.precision, device),
        "max_epochs": settings.max_epochs,
        "callbacks": callbacks,
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": show_progress_bar,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 1.0 if val_set is not None else 0,
    }
    if settings.max_time is not None:
        options["max_time"] = timedelta(seconds=float(settings.max_time))
    options.update(trainer_params or {})
    options.setdefault("use_distributed_sampler", False)  # the loaders below split the training items themselves

    def train_loader(rank: int, world_size: int):
        return _loader(train_set, settings, True, collate_fn, random_state, rank=rank, world_size=world_size)

    val_loader = _loader(val_set, settings, False, collate_fn, random_state) if val_set is not None else None
    task = _lightning_task(net, settings, train_loader, val_loader)
    lightning_logger = logging.getLogger("lightning.pytorch")
    level = lightning_logger.level
    lightning_logger.setLevel(logging.WARNING)  # no "GPU available: False" banners in the user's notebook
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*number of training batches.*smaller than the logging.*")
            warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*validation_step.* but have no .val_dataloader.*")
            # an objective skips a batch it cannot use (one image under batch norm) by returning None
            warnings.filterwarnings("ignore", message=".*training_step. returned .None.*")
            trainer = pl.Trainer(**options)
            trainer.fit(task)  # loaders come from the task's hooks, after DDP has set the ranks
    finally:
        lightning_logger.setLevel(level)
    history = pd.DataFrame(keep_best.rows)
    if keep_best.best is not None:
        best_epoch, best_score, state = keep_best.best
        net.load_state_dict(state)
    else:
        best_epoch, best_score = int(trainer.current_epoch) - 1, float("nan")
    stopped_early = int(trainer.current_epoch) < settings.max_epochs
    return TrainResult(history, int(best_epoch), float(best_score), stopped_early, time.perf_counter() - started)


@torch.no_grad()
def predict_network(
    net: torch.nn.Module,
    dataset: Dataset,
    *,
    device: str = "cpu",
    batch_size: int = 1024,
    precision: str = "auto",
    collate_fn: Callable | None = None,
) -> np.ndarray:
    """Predictions for every row of ``dataset``, in order (eval mode; autocast on GPU)."""
    net = net.to(device).eval()
    loader = DataLoader(dataset, batch_size=1 if collate_fn is single_item else batch_size, collate_fn=collate_fn)
    precision = resolve_precision(precision, device)
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    outputs = []
    for batch in loader:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=precision.endswith("mixed")):
            outputs.append(net(batch).float().cpu().numpy())
    return np.concatenate(outputs)
