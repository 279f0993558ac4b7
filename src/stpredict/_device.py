"""Where torch work runs."""

from __future__ import annotations

from ._logging import logger


def resolve_device(device: str, needed: bool) -> str:
    """``'auto'`` -> ``'cuda'`` when a GPU is visible, else ``'cpu'``; an unavailable GPU is an error."""
    if not needed:
        if device not in ("auto", "cpu"):
            logger.info("this model runs on the CPU; device=%r is ignored", device)
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        msg = f"device={device!r} was requested but torch sees no GPU; use device='auto' or 'cpu'."
        raise RuntimeError(msg)
    return device
