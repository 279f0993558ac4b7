"""Typed model parameters: one frozen dataclass per concern, ``Literal`` choices checked once, on construction.

A neural model declares its network's parameters as a :class:`Params` subclass and its training settings as
a :class:`~stpredict.models._train.TrainSettings` instance with its own defaults; ``Model.defaults`` (the
``model_params`` a user may pass) is derived from both, and a wrong choice fails when the model is made.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, fields
from types import UnionType
from typing import Any, Literal


def _choices(annotation: Any) -> tuple | None:
    """The values a ``Literal[...]`` (or ``Literal[...] | None``) annotation allows; ``None`` for other types."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return typing.get_args(annotation)
    if origin in (typing.Union, UnionType):
        allowed = [_choices(arg) if arg is not type(None) else (None,) for arg in typing.get_args(annotation)]
        if all(a is not None for a in allowed) and any(
            typing.get_origin(a) is None for a in typing.get_args(annotation)
        ):
            return tuple(v for a in allowed for v in a)
    return None


@dataclass(frozen=True)
class Params:
    """Base of typed parameters: ``Literal`` fields are checked, lists become tuples (hashable, immutable).

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> from typing import Literal
    >>> @dataclass(frozen=True)
    ... class Net(Params):
    ...     norm: Literal["graph", "none"] = "none"
    ...     hidden: tuple[int, ...] = (64,)
    >>> Net(hidden=[32, 32]).hidden
    (32, 32)
    >>> Net(norm="batch")
    Traceback (most recent call last):
    ...
    ValueError: norm must be one of ('graph', 'none'), got 'batch'.
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
            choices = _choices(hints[f.name])
            if choices is not None and value not in choices:
                msg = f"{f.name} must be one of {choices}, got {value!r}."
                raise ValueError(msg)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field with its default (fields without one are not parameters a user may leave out)."""
        values = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
        values.update({f.name: f.default_factory() for f in fields(cls) if f.default_factory is not MISSING})
        return {name: values[name] for name in cls.names() if name in values}  # in declaration order

    @classmethod
    def from_params(cls, params: typing.Mapping[str, Any]):
        """The fields of ``params`` that belong here (other keys are another concern's)."""
        return cls(**{k: v for k, v in params.items() if k in cls.names()})

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.names()}
