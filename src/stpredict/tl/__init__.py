"""Tools: fitting, predicting and evaluating (``st.tl``)."""

from .._predictions import prediction_adata
from ..models import Model, ModelInputs, Predictor, Validation, available_models, model_ablations, register_model
from ..models.spahgc._inspect import hetero_graph  # SpaHGC's slide graph, public here to inspect
from ._benchmark import benchmark, paired_comparison
from ._cross_validate import cross_validate
from ._enrichment import enrichment
from ._evaluate import evaluate, summarize
from ._fit import fit, load_model, predict
from ._fit_predict import fit_predict
from ._gene_correlation import gene_correlation
from ._gene_similarity import gene_similarity
from ._regions import cluster_predictions, differential_expression, region_agreement
from ._splits import Fold, make_splits
from ._super_resolve import super_resolve
from ._train_encoder import TrainedEncoder, train_encoder
from ._uncertainty import interval_coverage

__all__ = [
    "Fold",
    "Model",
    "ModelInputs",
    "Predictor",
    "TrainedEncoder",
    "Validation",
    "available_models",
    "benchmark",
    "cluster_predictions",
    "cross_validate",
    "differential_expression",
    "enrichment",
    "evaluate",
    "fit",
    "fit_predict",
    "gene_correlation",
    "gene_similarity",
    "hetero_graph",
    "interval_coverage",
    "load_model",
    "make_splits",
    "model_ablations",
    "paired_comparison",
    "predict",
    "prediction_adata",
    "region_agreement",
    "register_model",
    "summarize",
    "super_resolve",
    "train_encoder",
]
