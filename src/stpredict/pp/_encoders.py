"""CNN and foundation-model encoders for spot patches (torchvision and timm), with explicit weights.

Weights never download silently: pass ``checkpoint=`` (a local file: a torchvision/timm state dict, or an
encoder saved by :func:`stpredict.tl.train_encoder`) or ``pretrained=True`` (downloads from the
torchvision / Hugging Face hubs; UNI needs an accepted licence and ``huggingface-cli login``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .._logging import logger

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINT_FORMAT = "stpredict-encoder-1"


@dataclass(frozen=True)
class EncoderSpec:
    """How to build an encoder and prepare its input."""

    name: str
    library: str  # 'torchvision' or 'timm'
    arch: str
    dim: int
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    hub_id: str | None = None
    timm_kwargs: dict[str, Any] = field(default_factory=dict)


ENCODERS: dict[str, EncoderSpec] = {
    "resnet18": EncoderSpec("resnet18", "torchvision", "resnet18", 512),
    "resnet50": EncoderSpec("resnet50", "torchvision", "resnet50", 2048),
    "densenet121": EncoderSpec("densenet121", "torchvision", "densenet121", 1024),
    "vit_b_16": EncoderSpec("vit_b_16", "torchvision", "vit_b_16", 768),
    # UNI (Chen et al. 2024): ViT-L/16 pretrained on 100k+ H&E slides; gated on Hugging Face
    "uni": EncoderSpec(
        "uni",
        "timm",
        "vit_large_patch16_224",
        1024,
        hub_id="hf-hub:MahmoodLab/uni",
        timm_kwargs={"init_values": 1e-5, "dynamic_img_size": True},
    ),
}


def encoder_spec(name: str) -> EncoderSpec:
    """The spec of a named encoder; ``'timm:<model>'`` builds any timm model (feature size found at load)."""
    if name in ENCODERS:
        return ENCODERS[name]
    if name.startswith("timm:"):
        return EncoderSpec(name, "timm", name.removeprefix("timm:"), dim=-1)
    msg = f"Unknown encoder {name!r}; choose from {sorted(ENCODERS)} or 'timm:<model name>'."
    raise ValueError(msg)


def build_backbone(spec: EncoderSpec, *, pretrained: bool = False):
    """The network without its classification head: images ``(n, 3, s, s)`` -> features ``(n, dim)``."""
    import torch.nn as nn

    if spec.library == "torchvision":
        import torchvision

        weights = "DEFAULT" if pretrained else None
        model = getattr(torchvision.models, spec.arch)(weights=weights)
        for head in ("fc", "classifier", "heads"):
            if hasattr(model, head):
                setattr(model, head, nn.Identity())
        return model
    import timm

    name = spec.hub_id if (pretrained and spec.hub_id) else spec.arch
    return timm.create_model(name, pretrained=pretrained, num_classes=0, **spec.timm_kwargs)


def _read_checkpoint(path: Path) -> tuple[dict, dict]:
    """(state dict, stpredict metadata or {}) from a checkpoint file."""
    import torch

    if not path.is_file():
        msg = f"Checkpoint {str(path)!r} does not exist."
        raise FileNotFoundError(msg)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        msg = f"Could not read checkpoint {str(path)!r} as a torch state dict ({err})."
        raise ValueError(msg) from err
    meta = {}
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        meta = {k: v for k, v in payload.items() if k != "state_dict"}
        payload = payload["state_dict"]
    elif isinstance(payload, dict):
        for key in ("state_dict", "model"):
            if key in payload and isinstance(payload[key], dict):
                payload = payload[key]
    state = {k.removeprefix("module."): v for k, v in payload.items()}
    return state, meta


def load_encoder(
    name: str,
    *,
    checkpoint: str | PathLike | None = None,
    pretrained: bool = False,
):
    """Build a named encoder with its weights; returns ``(module in eval mode, spec)``.

    Parameters
    ----------
    name
        A key of ``ENCODERS`` (``'resnet18'``, ``'resnet50'``, ``'densenet121'``, ``'vit_b_16'``, ``'uni'``)
        or ``'timm:<model>'``.
    checkpoint
        Local weights file. Classification-head weights in it are ignored; any other mismatch is an error.
    pretrained
        Download the published weights (torchvision: ImageNet; ``'uni'``: Hugging Face, gated).

    Examples
    --------
    >>> import torch, stpredict as st
    >>> model, spec = st.pp.load_encoder("resnet18", checkpoint="weights.pt")  # doctest: +SKIP
    """
    spec = encoder_spec(name)
    if checkpoint is None and not pretrained:
        msg = (
            f"Encoder {name!r} needs weights: pass checkpoint= (a local file) or pretrained=True (downloads). "
            "Offline without weights, use method='handcrafted' or train one with st.tl.train_encoder."
        )
        raise ValueError(msg)
    meta: dict = {}
    state = None
    if checkpoint is not None:
        state, meta = _read_checkpoint(Path(checkpoint))
        if meta:
            spec = replace(spec, input_size=int(meta["input_size"]), mean=tuple(meta["mean"]), std=tuple(meta["std"]))
    try:
        model = build_backbone(spec, pretrained=pretrained and checkpoint is None)
    except Exception as err:
        if pretrained:
            msg = (
                f"Could not get the published weights of {name!r} ({type(err).__name__}: {err}). Offline or a gated "
                "model (UNI: accept its licence and run `huggingface-cli login`)? Download them elsewhere and "
                "pass checkpoint=."
            )
            raise ConnectionError(msg) from err
        raise
    if state is not None:
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # tensor shapes differ: another architecture
            first = str(err).split("\n\t")[1] if "\n\t" in str(err) else str(err)[:200]
            msg = f"Checkpoint {str(checkpoint)!r} does not fit encoder {name!r}: {first.strip()}"
            raise ValueError(msg) from None
        head = ("fc.", "classifier.", "heads.", "head.")
        unexpected = [k for k in result.unexpected_keys if not k.startswith(head)]
        if result.missing_keys or unexpected:
            msg = (
                f"Checkpoint {str(checkpoint)!r} does not fit encoder {name!r}: missing {result.missing_keys[:5]}, "
                f"unexpected {unexpected[:5]}."
            )
            raise ValueError(msg)
    model.eval()
    if spec.dim < 0:
        spec = replace(spec, dim=int(model.num_features))
    logger.info("encoder %s loaded (%s)", name, "checkpoint" if checkpoint else "published weights")
    return model, spec


def to_model_input(patches: np.ndarray, spec: EncoderSpec, device: str):
    """uint8 ``(n, h, w, 3)`` -> normalised float tensor ``(n, 3, s, s)`` on ``device``."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(patches[..., :3])).to(device).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != spec.input_size or x.shape[-2] != spec.input_size:
        x = F.interpolate(x, size=(spec.input_size, spec.input_size), mode="bilinear", antialias=True)
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def embed_patches(model, spec: EncoderSpec, patches: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Features of a batch of patches (mixed precision on GPU)."""
    import torch

    model = model.to(device)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        features = model(to_model_input(patches, spec, device))
    return features.float().cpu().numpy()
