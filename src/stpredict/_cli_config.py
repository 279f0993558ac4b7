"""The command line's configuration, checked before any work, and the record that makes resuming safe.

Every key of every table is checked against the function that receives it (with "did you mean"), the model
name and its ``model_params`` against the registry, all before the first slide is read. Each output
directory keeps ``stpredict_run.json``: for every slide written, the settings that made it (the tables that
feed the step, the model file's checksum for ``predict``), so a rerun skips a slide only when its settings
are unchanged and stops, naming the difference, when they are not.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._cli_slides import UsageError, read_keys
from ._validate import did_you_mean

RUN_RECORD = "stpredict_run.json"


def _keywords(function: Callable) -> set[str] | None:
    """Keyword parameters of ``function`` (``None`` when it takes ``**kwargs``: anything goes)."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL} - {"adata", "self"}


def _without(keys: set[str] | None, *drop: str) -> set[str] | None:
    return None if keys is None else keys - set(drop)


def _with(keys: set[str] | None, *add: str) -> set[str] | None:
    return None if keys is None else keys | set(add)


def table_keys() -> dict[str, tuple[set[str] | None, str]]:
    """Per table: the keys it accepts and the function that receives them (for messages)."""
    import stpredict as st
    from stpredict.models import Predictor

    return {
        "read": (read_keys(), "the st.io readers"),
        "features": (_without(_keywords(st.pp.image_features), "copy"), "st.pp.image_features"),
        "fit": (_with(_keywords(st.tl.fit), "n_genes"), "st.tl.fit (and n_genes: st.pp.select_genes)"),
        "predict": (_without(_keywords(Predictor.predict), "copy"), "Predictor.predict"),
        "evaluate": (_without(_keywords(st.tl.evaluate), "inplace", "layer_pred"), "st.tl.evaluate"),
    }


def check_tables(config: dict[str, dict[str, Any]], source: str) -> None:
    """Refuse an unknown key in any table, naming the table, the function and the accepted keys."""
    for table, (accepted, receiver) in table_keys().items():
        if accepted is None:
            continue
        for key in config.get(table, {}):
            if key not in accepted:
                raise UsageError(
                    f"{source}: [{table}] has no key {key!r}.{did_you_mean(key, sorted(accepted))} The keys of [{table}] are "
                    f"those of {receiver}: {sorted(accepted)}."
                )


def check_model(options: dict[str, Any]) -> None:
    """The ``[fit]`` model is registered and its ``model_params`` are its own (both before any slide is read)."""
    import stpredict as st
    from stpredict.models import get_model

    name = options.get("model", "ridge")
    models = st.tl.available_models()
    if name not in models:
        raise UsageError(f"Unknown model {name!r}.{did_you_mean(name, models)} Models: {models}.")
    params = options.get("model_params") or {}
    try:
        get_model(name).check_params(params)
    except (TypeError, ValueError) as err:
        raise UsageError(f"[fit] model_params for {name!r}: {err}") from err


def file_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RunRecord:
    """``stpredict_run.json`` of an output directory: the settings each written slide was made with."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / RUN_RECORD
        self.entries: dict[str, dict] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def differences(self, output: Path, settings: dict) -> list[str] | None:
        """``None`` when ``output``'s settings are not recorded; else what changed (``[]``: nothing)."""
        entry = self.entries.get(output.name)
        if entry is None:
            return None
        return describe_changes(entry.get("settings", {}), settings)

    def write(self, output: Path, settings: dict) -> None:
        from ._files import atomic_path

        self.entries[output.name] = {"settings": settings}
        with atomic_path(self.path) as tmp:
            Path(tmp).write_text(json.dumps(self.entries, indent=1, sort_keys=True, default=str))


def describe_changes(before: dict, now: dict, prefix: str = "") -> list[str]:
    """``'[features] size: 224 -> 112'`` lines for every key whose value differs."""
    changes = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key, "(unset)"), now.get(key, "(unset)")
        label = f"[{key}]" if not prefix else f"{prefix} {key}"
        if isinstance(old, dict) and isinstance(new, dict):
            changes += describe_changes(old, new, label)
        elif json.dumps(old, sort_keys=True, default=str) != json.dumps(new, sort_keys=True, default=str):
            changes.append(f"{label}: {old!r} -> {new!r}")
    return changes
