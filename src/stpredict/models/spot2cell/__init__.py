"""Cells from spots, in the spirit of DeepSpot2Cell (Nonchev et al. 2025): ``st.tl.fit(adata, model='spot2cell')``."""

from ._model import PAPER_PARAMS, Spot2CellModel, Spot2CellParams, spot_cell_bags
from ._module import Spot2CellNet

__all__ = ["PAPER_PARAMS", "Spot2CellModel", "Spot2CellNet", "Spot2CellParams", "spot_cell_bags"]
