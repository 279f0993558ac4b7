"""stpredict: predict spatial gene expression from H&E histology.

Use it as ``import stpredict as st``:

- :mod:`stpredict.io` reads slides into AnnData in squidpy's layout,
- :mod:`stpredict.datasets` ships a small real fixture and downloads public data sets,
- :mod:`stpredict.pp` prepares targets (normalisation, gene selection, smoothing) and image features,
- :mod:`stpredict.tl` fits models, predicts and evaluates,
- :mod:`stpredict.pl` plots predictions and scores.

``st.settings.verbosity`` sets what is shown (data problems are :class:`StPredictWarning` warnings).
"""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, io, pl, pp, tl
from ._logging import StPredictWarning, settings

try:
    __version__ = version("stpredict")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["datasets", "io", "pl", "pp", "tl", "settings", "StPredictWarning", "__version__"]
