"""Tools: fitting, predicting and evaluating (``st.tl``)."""

from ._cross_validate import cross_validate
from ._evaluate import evaluate, summarize
from ._fit_predict import fit_predict
from ._models import Model, SpotData, available_models, register_model
from ._splits import Fold, make_splits
from ._train_encoder import TrainedEncoder, train_encoder

__all__ = [
    "Fold",
    "Model",
    "SpotData",
    "TrainedEncoder",
    "available_models",
    "cross_validate",
    "evaluate",
    "fit_predict",
    "make_splits",
    "register_model",
    "summarize",
    "train_encoder",
]
