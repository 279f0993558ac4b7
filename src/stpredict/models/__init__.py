"""The model contract and the registry behind ``st.tl.fit(model=...)``.

Importing this package imports no model: each built-in model's module (and torch / torch-geometric) is
imported when the model is first used.
"""

from ._base import Model, Validation, available_models, get_model, model_ablations, register_model
from ._inputs import ModelInputs, SlideImages
from ._predictor import Predictor

__all__ = [
    "Model",
    "ModelInputs",
    "Predictor",
    "SlideImages",
    "Validation",
    "available_models",
    "model_ablations",
    "get_model",
    "register_model",
]
