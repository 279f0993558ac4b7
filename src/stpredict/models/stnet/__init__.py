"""ST-Net (He et al., Nat. Biomed. Eng. 2020): ``st.tl.fit(adata, model='stnet')``."""

from ._model import PAPER_PARAMS, StnetModel, StnetParams
from ._module import STNet

__all__ = ["PAPER_PARAMS", "STNet", "StnetModel", "StnetParams"]
