"""iStar's network (Zhang et al., Nat. Biotechnol. 2024): an MLP per bin, a spot the mean of its bins.

Each member of the ensemble maps a bin's features through ``hidden`` LeakyReLU layers to a non-negative
expression per gene (an ELU shifted up by its floor, as the paper's output layer), in min-max units of the
genes' *linear* expression. A spot's expression is the mean over the bins inside it, so the bins of a spot
add up to the spot by construction; the ensemble's value for a bin is the median over its members.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._data import Key
from .._nn import Standardize
from .._subspot import BAG_MASK


class ShiftedELU(nn.Module):
    """``ELU(alpha)(x) + alpha``: a smooth output that never falls below 0 (iStar's output activation)."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.elu(x, alpha=self.alpha) + self.alpha


class Member(nn.Module):
    """One bin MLP: ``Linear -> LeakyReLU`` per hidden width, then ``Linear -> out`` (default ``ShiftedELU``).

    ``linear_skip`` (not in the paper) adds a linear map of the inputs before the output activation, started
    at the ridge fit of the training spots (a spot's mean features to its expression: exact for a linear map,
    since the mean of a linear map over the bins is the map of the bins' mean); the MLP's last layer starts
    at zero, so training begins from the ridge solution and the MLP learns what it misses.
    """

    def __init__(
        self,
        n_features: int,
        n_genes: int,
        hidden: Sequence[int],
        slope: float,
        floor: float,
        linear_skip: bool,
        out: nn.Module | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.LeakyReLU(slope)]
            width = int(h)
        layers.append(nn.Linear(width, n_genes))
        self.body = nn.Sequential(*layers)
        self.skip = nn.Linear(n_features, n_genes) if linear_skip else None
        self.out = ShiftedELU(floor) if out is None else out

    def start_at(self, weight, bias) -> None:
        """The linear skip at ``weight`` ``(genes, features)`` and ``bias``; the MLP's output layer at zero."""
        with torch.no_grad():
            self.skip.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.skip.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
            self.body[-1].weight.zero_()
            self.body[-1].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.body(x)
        if self.skip is not None:
            pre = pre + self.skip(x)
        return self.out(pre)


class IstarNet(nn.Module):
    """Bags of bin features -> spot expression, z-scored on the target scale (``net(batch)``).

    ``bin_output`` says what a member's output for a bin is:

    - ``'linear'`` (the paper): linear expression in min-max units (``lin_min + lin_range * unit``), through
      iStar's shifted ELU;
    - ``'log'`` (not in the paper): the bin's value on the target's ``log1p`` scale, through a softplus (so
      never below zero expression).

    Either way a spot is the mean of its bins in *linear* units, brought back to the target scale (for a
    ``log1p`` target: ``log1p(mean(expm1(t)))``), so the bins of a spot average to the spot. Buffers (set
    from the training spots, saved with the weights): the inputs' standardisation, the linear units, and the
    target scale's mean and std (the z-scoring of the shared training loop).
    """

    def __init__(
        self,
        n_features: int,
        n_genes: int,
        *,
        hidden: Sequence[int],
        n_states: int,
        slope: float,
        floor: float,
        log_target: bool,
        loss_space: str,
        linear_skip: bool = False,
        bin_output: str = "linear",
    ) -> None:
        super().__init__()
        if bin_output == "log" and not log_target:
            msg = "bin_output='log' needs a log1p target layer (st.pp.normalize's 'log1p'); use bin_output='linear'."
            raise ValueError(msg)
        self.scale_in = Standardize(n_features)
        self.bin_output = bin_output
        out = nn.Softplus() if bin_output == "log" else None
        self.members = nn.ModuleList(
            Member(n_features, n_genes, hidden, slope, floor, linear_skip, out) for _ in range(n_states)
        )
        self.log_target = bool(log_target)
        self.loss_space = loss_space
        for name, value in (("lin_min", 0.0), ("lin_range", 1.0), ("out_mean", 0.0), ("out_std", 1.0)):
            self.register_buffer(name, torch.full((n_genes,), value))
        # 'log' bins: at most this (the highest training spot's log1p + 1, set from the training spots): a linear
        # map fitted on spot means extrapolates to single bins, and exp of a far extrapolation overflows
        self.register_buffer("log_cap", torch.full((n_genes,), 20.0))

    # --- scales ------------------------------------------------------------------------------------------------

    def to_target(self, linear: torch.Tensor) -> torch.Tensor:
        """Linear expression -> the target layer's scale."""
        return torch.log1p(linear.clamp_min(0.0)) if self.log_target else linear

    def to_linear(self, target: torch.Tensor) -> torch.Tensor:
        """The target layer's scale -> linear expression."""
        return torch.expm1(target).clamp_min(0.0) if self.log_target else target

    def unit_to_linear(self, unit: torch.Tensor) -> torch.Tensor:
        return self.lin_min + self.lin_range * unit

    # --- bins and spots ----------------------------------------------------------------------------------------

    def member_linear(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., features)`` -> ``(states, ..., genes)``: each member's linear expression of the bins."""
        x = self.scale_in(x)
        outputs = torch.stack([m(x) for m in self.members])
        if self.bin_output == "log":
            return self.to_linear(torch.minimum(outputs, self.log_cap))
        return self.unit_to_linear(outputs)

    def bin_linear(self, x: torch.Tensor) -> torch.Tensor:
        """A bin's linear expression (spot-equivalent: what a spot of such bins would measure), ensemble median."""
        return self.member_linear(x).median(dim=0).values

    @staticmethod
    def _spot_mean(per_bin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over each spot's bins, ``per_bin`` ``(..., spots, bins, genes)`` -> ``(..., spots, genes)``."""
        weights = mask.to(per_bin.dtype) / mask.sum(dim=-1, keepdim=True).clamp_min(1)
        return (per_bin * weights[..., None]).sum(dim=-2)

    def forward(self, batch) -> torch.Tensor:
        """z-scored target-scale prediction of each spot: the mean of its bins' (median) linear expression."""
        linear = self._spot_mean(self.bin_linear(batch[Key.X]), batch[BAG_MASK])
        return (self.to_target(linear) - self.out_mean) / self.out_std

    def training_loss(self, batch) -> torch.Tensor:
        """Mean of the members' MSE: each member is trained on its own (as the paper's independent states).

        ``loss_space='linear'`` (the paper): in min-max units of the spots' linear expression;
        ``'target'``: on the z-scored target scale, as every other model here.
        """
        linear = self._spot_mean(self.member_linear(batch[Key.X]), batch[BAG_MASK])  # (states, spots, genes)
        target_z = batch[Key.Y]
        if self.loss_space == "linear":
            measured = self.to_linear(target_z * self.out_std + self.out_mean)
            return (((linear - measured) / self.lin_range) ** 2).mean()
        pred = (self.to_target(linear) - self.out_mean) / self.out_std
        return ((pred - target_z) ** 2).mean()
