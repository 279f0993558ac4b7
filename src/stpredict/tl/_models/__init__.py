"""Models behind ``st.tl.fit_predict(model=...)``; importing a module registers its model."""

from . import _ridge
from ._base import Model, SpotData, available_models, get_model, register_model

__all__ = ["Model", "SpotData", "available_models", "get_model", "register_model"]
