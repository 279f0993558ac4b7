"""CNN and foundation-model encoders for spot patches (torchvision and timm), with explicit weights.

Weights never download silently: pass ``checkpoint=`` (a local file: a torchvision/timm state dict, or an
encoder saved by :func:`stpredict.tl.train_encoder`) or ``pretrained=True`` (downloads from the
torchvision / Hugging Face hubs; UNI needs an accepted licence and ``huggingface-cli login``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .._logging import logger, warn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: H-optimus-0/1 and H0-mini were trained on H&E statistics, not ImageNet's (their model cards)
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
CHECKPOINT_FORMAT = "stpredict-encoder-1"
POOLINGS = ("model", "cls", "cls+mean")
#: layer names a spec's ``timm_kwargs`` may use (kept as text so specs stay plain data)
TIMM_LAYERS = {"SwiGLUPacked": ("timm.layers", "SwiGLUPacked"), "SiLU": ("torch.nn", "SiLU")}
#: the preprocessing keys a user may override and the recipe records
PREPROCESSING_KEYS = ("input_size", "mean", "std", "interpolation", "resize", "pooling")


@dataclass(frozen=True)
class EncoderSpec:
    """How to build an encoder, prepare its input and read its output (from the model card).

    ``resize``: resize the patch to this side first, then centre-crop ``input_size`` (e.g. Prov-GigaPath's
    256 -> 224); ``None`` resizes the patch straight to ``input_size``. ``pooling``: ``'model'`` (the
    network's own output: timm's ``num_classes=0`` pooling, the CLS token for most ViTs), ``'cls'`` or
    ``'cls+mean'`` (the class token concatenated with the mean of the patch tokens, registers excluded).
    """

    name: str
    library: str  # 'torchvision', 'timm', 'hf' (Hugging Face transformers) or 'open_clip' (CONCH)
    arch: str
    dim: int
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    resize: int | None = None
    hub_id: str | None = None
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    pooling: str = "model"
    licence: str = ""
    page: str | None = None
    gated: bool = False
    package: str | None = None  # what to install for this library, when it is not a dependency
    hf_config: dict[str, Any] = field(default_factory=dict)  # transformers config (model_type + shape) of the card
    # µm per pixel of the tiles the encoder was trained on (its card / paper); None: not one resolution, or unknown
    native_mpp: float | None = None

    def preprocessing(self) -> dict[str, Any]:
        """What the recipe records and checks: a model trained on one encoder's features refuses another's."""
        return {
            "input_size": int(self.input_size),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "interpolation": self.interpolation,
            "resize": None if self.resize is None else int(self.resize),
            "pooling": self.pooling,
        }


def _timm(name, arch, dim, hub, *, licence, page, gated, **options) -> EncoderSpec:
    return EncoderSpec(name, "timm", arch, dim, hub_id=hub, licence=licence, page=page, gated=gated, **options)


_SWIGLU = {"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"}
_HF = "https://huggingface.co/"

ENCODERS: dict[str, EncoderSpec] = {
    "resnet18": EncoderSpec("resnet18", "torchvision", "resnet18", 512, licence="BSD-3-Clause (torchvision)"),
    "resnet50": EncoderSpec("resnet50", "torchvision", "resnet50", 2048, licence="BSD-3-Clause (torchvision)"),
    "densenet121": EncoderSpec("densenet121", "torchvision", "densenet121", 1024, licence="BSD-3-Clause"),
    "vit_b_16": EncoderSpec("vit_b_16", "torchvision", "vit_b_16", 768, licence="BSD-3-Clause (torchvision)"),
    # UNI (Chen et al. 2024): ViT-L/16, DINOv2 on 100k H&E slides
    "uni": _timm(
        "uni", "vit_large_patch16_224", 1024, "hf-hub:MahmoodLab/uni",
        timm_kwargs={"init_values": 1e-5, "dynamic_img_size": True},
        licence="CC-BY-NC-ND-4.0", page=_HF + "MahmoodLab/UNI", gated=True,
        native_mpp=0.5,
    ),
    # UNI2-h: ViT-H/14 with 8 registers and SwiGLU
    "uni2-h": _timm(
        "uni2-h", "vit_giant_patch14_224", 1536, "hf-hub:MahmoodLab/UNI2-h",
        timm_kwargs={
            "img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5,
            "embed_dim": 1536, "mlp_ratio": 2.66667 * 2, "no_embed_class": True, "reg_tokens": 8,
            "dynamic_img_size": True, **_SWIGLU,
        },
        licence="CC-BY-NC-ND-4.0", page=_HF + "MahmoodLab/UNI2-h", gated=True,
        native_mpp=0.5,
    ),
    # Virchow (Vorontsov et al. 2024): ViT-H/14; the card's embedding is CLS + mean of the patch tokens
    "virchow": _timm(
        "virchow", "vit_huge_patch14_224", 2560, "hf-hub:paige-ai/Virchow",
        timm_kwargs={"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "global_pool": "",
                     "dynamic_img_size": True, **_SWIGLU},
        pooling="cls+mean", interpolation="bicubic",
        licence="Apache-2.0", page=_HF + "paige-ai/Virchow", gated=True,
        native_mpp=0.5,
    ),
    "virchow2": _timm(
        "virchow2", "vit_huge_patch14_224", 2560, "hf-hub:paige-ai/Virchow2",
        timm_kwargs={"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "global_pool": "",
                     "reg_tokens": 4, "dynamic_img_size": True, **_SWIGLU},
        pooling="cls+mean", interpolation="bicubic",
        licence="CC-BY-NC-ND-4.0", page=_HF + "paige-ai/Virchow2", gated=True,
    ),
    # H-optimus-0/1 (Bioptimus): ViT-g/14 with 4 registers, H&E normalisation constants
    "h-optimus-0": _timm(
        "h-optimus-0", "vit_giant_patch14_reg4_dinov2", 1536, "hf-hub:bioptimus/H-optimus-0",
        timm_kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
        mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD, interpolation="bicubic",
        licence="Apache-2.0", page=_HF + "bioptimus/H-optimus-0", gated=False,
        native_mpp=0.5,
    ),
    "h-optimus-1": _timm(
        "h-optimus-1", "vit_giant_patch14_reg4_dinov2", 1536, "hf-hub:bioptimus/H-optimus-1",
        timm_kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
        mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD, interpolation="bicubic",
        licence="CC-BY-NC-ND-4.0", page=_HF + "bioptimus/H-optimus-1", gated=True,
        native_mpp=0.5,
    ),
    # H0-mini: ViT-B/14 distilled from H-optimus-1
    "h0-mini": _timm(
        "h0-mini", "vit_base_patch14_reg4_dinov2", 768, "hf-hub:bioptimus/H0-mini",
        timm_kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False, **_SWIGLU},
        mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD, interpolation="bicubic", pooling="cls",
        licence="CC-BY-NC-ND-4.0", page=_HF + "bioptimus/H0-mini", gated=True,
        native_mpp=0.5,
    ),
    # Prov-GigaPath tile encoder (Xu et al. 2024): ViT-g/16; resize 256 (bicubic), centre crop 224
    "prov-gigapath": _timm(
        "prov-gigapath", "vit_giant_patch14_dinov2", 1536, "hf_hub:prov-gigapath/prov-gigapath",
        timm_kwargs={"img_size": 224, "patch_size": 16, "embed_dim": 1536, "depth": 40, "num_heads": 24,
                     "init_values": 1e-5, "mlp_ratio": 5.33334},
        resize=256, interpolation="bicubic",
        licence="Apache-2.0", page=_HF + "prov-gigapath/prov-gigapath", gated=True,
        native_mpp=0.5,
    ),
    # Phikon / Phikon-v2 (Owkin): Hugging Face transformers ViTs; the CLS token of the last layer
    "phikon": EncoderSpec(
        "phikon", "hf", "owkin/phikon", 768, pooling="cls", licence="Owkin non-commercial",
        page=_HF + "owkin/phikon", package="transformers",
        hf_config={"model_type": "vit", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                   "intermediate_size": 3072, "image_size": 224, "patch_size": 16, "layer_norm_eps": 1e-6},
        native_mpp=0.5,
    ),
    "phikon-v2": EncoderSpec(
        "phikon-v2", "hf", "owkin/phikon-v2", 1024, pooling="cls", licence="Owkin non-commercial",
        page=_HF + "owkin/phikon-v2", package="transformers",
        hf_config={"model_type": "dinov2", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "mlp_ratio": 4, "image_size": 224, "patch_size": 16, "layer_norm_eps": 1e-6},
        native_mpp=0.5,
    ),
    # CONCH (Lu et al. 2024): the CoCa image tower at 448 px, OpenAI CLIP normalisation, through the CONCH package
    "conch": EncoderSpec(
        "conch", "open_clip", "conch_ViT-B-16", 512, input_size=448, resize=448, interpolation="bicubic",
        mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711),
        hub_id="hf_hub:MahmoodLab/conch", licence="CC-BY-NC-ND-4.0", page=_HF + "MahmoodLab/CONCH", gated=True,
        package="git+https://github.com/mahmoodlab/CONCH.git",
    ),
}  # fmt: skip


def encoder_spec(name: str) -> EncoderSpec:
    """The spec of a named encoder, ``'timm:<model>'`` (any timm model) or ``'hf:<model id>'``.

    A ``timm:`` model's preprocessing is read from its pretrained configuration when it is built; an ``hf:``
    model is any Hugging Face transformers image model.
    """
    if name in ENCODERS:
        return ENCODERS[name]
    if name.startswith("timm:"):
        arch = name.removeprefix("timm:")
        hub = arch if arch.startswith(("hf-hub:", "hf_hub:")) else None
        return EncoderSpec(name, "timm", arch, dim=-1, hub_id=hub)
    if name.startswith("hf:"):
        return EncoderSpec(name, "hf", name.removeprefix("hf:"), dim=-1, pooling="cls", package="transformers")
    from .._validate import did_you_mean

    hint = did_you_mean(name, sorted(ENCODERS), extensions_first=True)  # 'uni2' -> 'uni2-h', not 'uni'
    msg = f"Unknown encoder {name!r}.{hint} Choose from {sorted(ENCODERS)}, 'timm:<model name>' or 'hf:<model id>'."
    raise ValueError(msg)


def with_preprocessing(spec: EncoderSpec, preprocessing: Mapping[str, Any] | None) -> EncoderSpec:
    """``spec`` with the user's (or a recorded recipe's) preprocessing; unknown keys are an error."""
    if not preprocessing:
        return spec
    unknown = sorted(set(preprocessing) - set(PREPROCESSING_KEYS))
    if unknown:
        msg = f"Unknown preprocessing key(s) {unknown}; accepted: {list(PREPROCESSING_KEYS)}."
        raise ValueError(msg)
    values = dict(preprocessing)
    if "pooling" in values and values["pooling"] not in POOLINGS:
        msg = f"pooling must be one of {POOLINGS}, got {values['pooling']!r}."
        raise ValueError(msg)
    for key in ("mean", "std"):
        if key in values:
            values[key] = tuple(float(v) for v in values[key])
            if len(values[key]) != 3:
                msg = f"preprocessing {key} needs 3 values (R, G, B), got {preprocessing[key]!r}."
                raise ValueError(msg)
    return replace(spec, **values)


def _timm_kwargs(spec: EncoderSpec) -> dict[str, Any]:
    """The spec's construction arguments with named layers resolved to classes."""
    import importlib

    kwargs = dict(spec.timm_kwargs)
    for key, value in kwargs.items():
        if isinstance(value, str) and value in TIMM_LAYERS:
            module, attribute = TIMM_LAYERS[value]
            kwargs[key] = getattr(importlib.import_module(module), attribute)
    return kwargs


def token_pooled(model, pooling: str):
    """``model`` (a timm ViT) wrapped so that calling it returns the card's embedding from its token sequence.

    The class token (``'cls'``), or the class token concatenated with the mean of the patch tokens, registers
    excluded (``'cls+mean'``).
    """
    import torch
    import torch.nn as nn

    class TokenPooling(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.mode = model, pooling
            self.num_features = model.num_features * (2 if pooling == "cls+mean" else 1)

        def forward(self, x):
            tokens = self.inner.forward_features(x)
            cls_token = tokens[:, 0]
            if self.mode == "cls":
                return cls_token
            patches = tokens[:, self.inner.num_prefix_tokens :]  # class token and registers are prefix tokens
            return torch.cat([cls_token, patches.mean(dim=1)], dim=-1)

    return TokenPooling()


def _build_timm(spec: EncoderSpec, pretrained: bool):
    import timm

    name = spec.hub_id if (pretrained and spec.hub_id) else spec.arch.removeprefix("hf-hub:").removeprefix("hf_hub:")
    model = timm.create_model(name, pretrained=pretrained, num_classes=0, **_timm_kwargs(spec))
    return model if spec.pooling == "model" else token_pooled(model, spec.pooling)


def _build_hf(spec: EncoderSpec, pretrained: bool):
    """A Hugging Face transformers image model whose forward returns the CLS token of the last layer."""
    import torch.nn as nn

    try:
        import transformers
    except ImportError as err:
        msg = f"Encoder {spec.name!r} runs on Hugging Face transformers: pip install transformers."
        raise ImportError(msg) from err
    if pretrained:
        inner = transformers.AutoModel.from_pretrained(spec.arch)
    elif spec.hf_config:  # the card's architecture, offline (random weights, or a local checkpoint next)
        config = dict(spec.hf_config)
        inner = transformers.AutoModel.from_config(
            transformers.AutoConfig.for_model(config.pop("model_type"), **config)
        )
    else:  # an hf: model: its configuration from the hub (or the hub cache)
        inner = transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(spec.arch))

    class _ClsToken(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner
            self.num_features = int(inner.config.hidden_size)

        def forward(self, x):
            return self.inner(pixel_values=x).last_hidden_state[:, 0]

    return _ClsToken()


def _build_open_clip(spec: EncoderSpec, pretrained: bool):
    """CONCH's image tower through the CONCH package (``encode_image`` before the contrastive projection)."""
    import torch.nn as nn

    try:
        from conch.open_clip_custom import create_model_from_pretrained
    except ImportError as err:
        msg = f"Encoder {spec.name!r} needs the CONCH package: pip install {spec.package}"
        raise ImportError(msg) from err
    if pretrained:
        model, _ = create_model_from_pretrained(spec.arch, spec.hub_id)
    else:  # the architecture alone: CONCH's factory always loads weights, so build it from its config
        import json

        from conch.open_clip_custom.coca_model import CoCa
        from conch.open_clip_custom.factory import CFG_DIR

        config = json.loads((CFG_DIR / f"{spec.arch}.json").read_text())
        config.pop("custom_text", None)
        model = CoCa(**config)

    class _ImageTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.num_features = model, spec.dim

        def forward(self, x):
            return self.inner.encode_image(x, proj_contrast=False, normalize=False)

    return _ImageTower()


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
    if spec.library == "hf":
        return _build_hf(spec, pretrained)
    if spec.library == "open_clip":
        return _build_open_clip(spec, pretrained)
    return _build_timm(spec, pretrained)


def resolved_preprocessing(spec: EncoderSpec, model) -> EncoderSpec:
    """For ``'timm:<model>'`` and ``'hf:<model>'``, the model's own configuration; named encoders keep their card's.

    Mean, std, input size, interpolation and crop from ``timm.data.resolve_model_data_config``, or from the
    Hugging Face image processor saved with the model (``preprocessor_config.json``).
    """
    if spec.name in ENCODERS:
        return spec
    if spec.library == "hf":
        return _hf_processor_preprocessing(spec)
    if spec.library != "timm":
        return spec
    import timm.data

    config = timm.data.resolve_model_data_config(getattr(model, "inner", model))
    size = int(config["input_size"][-1])
    crop = float(config.get("crop_pct") or 1.0)
    return replace(
        spec,
        input_size=size,
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        interpolation=str(config.get("interpolation", "bilinear")),
        resize=round(size / crop) if crop < 1 else None,
    )


#: PIL resampling codes in Hugging Face image processors, as interpolation names
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def _hf_processor_preprocessing(spec: EncoderSpec) -> EncoderSpec:
    """Mean, std, input size, interpolation and crop of an ``hf:`` model's image processor.

    Without a processor (none saved with the model, or offline without the hub cache) the spec keeps ImageNet's
    constants at 224 px, and a warning says so: pass ``preprocessing=`` to set them.
    """
    import transformers

    try:
        processor = transformers.AutoImageProcessor.from_pretrained(spec.arch)
    except (OSError, ValueError) as err:
        warn(
            f"Encoder {spec.name!r}: no image processor found ({str(err).splitlines()[0][:120]}); using ImageNet's "
            "mean/std at 224 px. Pass preprocessing={'input_size': ..., 'mean': ..., 'std': ...} if the model "
            "card says otherwise."
        )
        return spec

    def side(value) -> int | None:
        """A processor's size: an int, or a dict / SizeDict with ``height`` or ``shortest_edge``."""
        if value is None or isinstance(value, int):
            return value
        for key in ("height", "shortest_edge"):
            found = value.get(key) if isinstance(value, Mapping) else getattr(value, key, None)
            if found:
                return int(found)
        return None

    size = side(getattr(processor, "size", None))
    crop = side(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop", False) else None
    input_size = crop or size or spec.input_size
    return replace(
        spec,
        input_size=input_size,
        mean=tuple(float(v) for v in (getattr(processor, "image_mean", None) or spec.mean)),
        std=tuple(float(v) for v in (getattr(processor, "image_std", None) or spec.std)),
        interpolation=_PIL_RESAMPLE.get(int(getattr(processor, "resample", 2) or 2), "bilinear"),
        resize=size if crop is not None and size is not None and size != crop else None,
    )


def _read_checkpoint(path: Path) -> tuple[dict, dict]:
    """(state dict, stpredict metadata or {}) from a checkpoint file."""
    import torch

    if not path.is_file():
        msg = f"Checkpoint {str(path)!r} does not exist."
        raise FileNotFoundError(msg)
    try:
        if path.suffix == ".safetensors":  # the hub's other weight format (model.safetensors)
            from safetensors.torch import load_file

            payload = load_file(str(path), device="cpu")
        else:
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


def _weights_error(spec: EncoderSpec, err: Exception) -> Exception:
    """What to do when published weights cannot be fetched: the licence page for gated models, else offline."""
    if isinstance(err, ImportError):
        return err
    where = (
        f" Accept its licence ({spec.licence}) at {spec.page} and log in with `huggingface-cli login` (or set HF_TOKEN)."
        if spec.gated
        else ""
    )
    msg = (
        f"Could not get the published weights of {spec.name!r} ({type(err).__name__}: {str(err)[:200]})."
        f"{where} Offline? Download the weights elsewhere and pass checkpoint=<the file>."
    )
    return (PermissionError if spec.gated else ConnectionError)(msg)


def _load_weights(model, state: dict, checkpoint, name: str) -> None:
    """Load a checkpoint into ``model`` (into the wrapped network when the card's pooling wraps it)."""
    target = getattr(model, "inner", model)
    try:
        result = target.load_state_dict(state, strict=False)
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


def load_encoder(
    name: str,
    *,
    checkpoint: str | PathLike | None = None,
    pretrained: bool = False,
    preprocessing: Mapping[str, Any] | None = None,
    random_weights: bool = False,
):
    """Build a named encoder with its weights; returns ``(module in eval mode, spec)``.

    The spec carries the model card's preprocessing (input size, mean/std, interpolation, resize and crop)
    and output (``pooling``); for ``'timm:<model>'`` they come from the model's pretrained configuration.

    Parameters
    ----------
    name
        A key of ``ENCODERS`` (``'uni'``, ``'uni2-h'``, ``'virchow'``, ``'virchow2'``, ``'h-optimus-0'``,
        ``'h-optimus-1'``, ``'h0-mini'``, ``'prov-gigapath'``, ``'phikon'``, ``'phikon-v2'``, ``'conch'``, the
        torchvision CNNs), ``'timm:<model>'`` or ``'hf:<model id>'``. ``docs/encoders.md`` lists them.
    checkpoint
        Local weights file. Classification-head weights in it are ignored; any other mismatch is an error.
    pretrained
        Download the published weights (torchvision: ImageNet; Hugging Face hub: gated models need their licence
        accepted and ``huggingface-cli login``).
    preprocessing
        Overrides of ``input_size``, ``mean``, ``std``, ``interpolation``, ``resize`` and ``pooling``.
    random_weights
        The architecture with random weights (tests, benchmarks of speed): never for features you keep.

    Examples
    --------
    >>> import stpredict as st
    >>> model, spec = st.pp.load_encoder("h-optimus-0", checkpoint="h-optimus-0.bin")  # doctest: +SKIP
    >>> st.pp.ENCODERS["h-optimus-0"].mean  # its card's normalisation, not ImageNet's
    (0.707223, 0.578729, 0.703617)
    >>> _, spec = st.pp.load_encoder("timm:resnet18", random_weights=True)  # preprocessing from timm's config
    >>> spec.dim, spec.input_size, spec.interpolation
    (512, 224, 'bicubic')
    """
    spec = encoder_spec(name)
    if checkpoint is None and not pretrained and not random_weights:
        where = f" ({spec.licence}; {spec.page})" if spec.page else ""
        msg = (
            f"Encoder {name!r} needs weights: pass checkpoint= (a local file) or pretrained=True (downloads{where}). "
            "Offline without weights, use method='handcrafted' or train one with st.tl.train_encoder."
        )
        raise ValueError(msg)
    meta: dict = {}
    state = None
    if checkpoint is not None:
        state, meta = _read_checkpoint(Path(checkpoint))
        if meta:
            spec = replace(spec, input_size=int(meta["input_size"]), mean=tuple(meta["mean"]), std=tuple(meta["std"]))
    download = pretrained and checkpoint is None
    try:
        model = build_backbone(spec, pretrained=download)
    except Exception as err:
        if download:
            raise _weights_error(spec, err) from err
        raise
    if state is not None:
        _load_weights(model, state, checkpoint, name)
    model.eval()
    built_pooling = spec.pooling
    spec = with_preprocessing(resolved_preprocessing(spec, model), preprocessing)
    if spec.pooling != built_pooling:
        if spec.library != "timm":
            msg = f"pooling can be changed for timm vision transformers only, not {name!r} ({spec.library})."
            raise ValueError(msg)
        base = getattr(model, "inner", model)
        model = base if spec.pooling == "model" else token_pooled(base, spec.pooling)
    spec = replace(spec, dim=int(getattr(model, "num_features", spec.dim)))
    logger.info(
        "encoder %s loaded (%s)",
        name,
        "checkpoint" if checkpoint else "random" if random_weights else "published weights",
    )
    return model, spec


def to_model_input(patches: np.ndarray, spec: EncoderSpec, device: str):
    """uint8 ``(n, h, w, 3)`` -> the model's input ``(n, 3, s, s)`` on ``device``.

    Resized (then centre-cropped when the card resizes larger first) with the card's interpolation, scaled
    to [0, 1], normalised.
    """
    import torch
    import torch.nn.functional as F

    host = torch.from_numpy(np.ascontiguousarray(patches[..., :3]))
    x = host.to(device, non_blocking=True).permute(0, 3, 1, 2).float() / 255.0
    side = spec.resize or spec.input_size
    mode = "bicubic" if spec.interpolation == "bicubic" else "bilinear"
    if x.shape[-1] != side or x.shape[-2] != side:
        x = F.interpolate(x, size=(side, side), mode=mode, antialias=True)
    if side != spec.input_size:
        top = (side - spec.input_size) // 2
        x = x[..., top : top + spec.input_size, top : top + spec.input_size]
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def embed_patches(model, spec: EncoderSpec, patches: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Features of a batch of patches (mixed precision on GPU; a batch too big for GPU memory is split)."""
    import torch

    model = model.to(device)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        try:
            features = model(to_model_input(patches, spec, device))
        except torch.cuda.OutOfMemoryError:
            if len(patches) < 2:
                raise
            torch.cuda.empty_cache()
            half = len(patches) // 2  # adapt: halve until the batch fits
            logger.info("embed: %d patches do not fit in GPU memory; splitting", len(patches))
            return np.concatenate([embed_patches(model, spec, patches[:half], device),
                                   embed_patches(model, spec, patches[half:], device)])  # fmt: skip
    return features.float().cpu().numpy()
