"""BLEEP (Xie et al., NeurIPS 2023): ``st.tl.fit(adata, model='bleep')``."""

from ._model import PAPER_PARAMS, BleepModel, BleepParams
from ._module import BLEEP, ProjectionHead, bleep_loss

__all__ = ["BLEEP", "PAPER_PARAMS", "BleepModel", "BleepParams", "ProjectionHead", "bleep_loss"]
