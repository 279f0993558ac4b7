"""TRIPLEX's networks (Chung et al., CVPR 2024) on tensors only; the model class handles slides and AnnData.

Three views of every spot are encoded separately and fused:

- target: the spot's own patch through a CNN trunk whose feature map becomes tokens, then transformer blocks;
- neighbour: the ``grid x grid`` tiles around the spot, each embedded by a frozen encoder, transformer
  blocks with a learned relative-position bias, tiles outside the image masked out of attention;
- global: frozen embeddings of all spots of the slide, transformer blocks, and after the first block the
  Atypical Position Encoding Generator (APEG) on the array grid.

The fusion layer queries the spot's global token against the target and the neighbour tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RelativePositionBias(nn.Module):
    """A learned attention bias per head for every relative offset between cells of a ``grid x grid`` view.

    The table holds one row per offset, ``(2 grid - 1) ** 2`` rows (Shaw et al. 2018, as in Swin); cells
    are numbered row by row.
    """

    def __init__(self, grid: int = 5, heads: int = 8) -> None:
        super().__init__()
        self.grid = int(grid)
        side = 2 * self.grid - 1
        self.table = nn.Parameter(torch.zeros(side * side, heads))
        nn.init.trunc_normal_(self.table, std=0.02)
        rows, cols = torch.meshgrid(torch.arange(self.grid), torch.arange(self.grid), indexing="ij")
        rows, cols = rows.flatten(), cols.flatten()
        offset_rows = rows[:, None] - rows[None, :] + self.grid - 1
        offset_cols = cols[:, None] - cols[None, :] + self.grid - 1
        self.register_buffer("index", offset_rows * side + offset_cols, persistent=False)

    def forward(self) -> torch.Tensor:
        """``(heads, cells, cells)`` bias added to the attention logits."""
        return self.table[self.index].permute(2, 0, 1)


class Attention(nn.Module):
    """Multi-head (self- or cross-) attention through ``scaled_dot_product_attention``.

    ``bias`` (``(heads, n_query, n_key)``) is added to the logits; keys where ``key_mask`` is ``False`` get
    no weight.
    """

    def __init__(self, dim: int, heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            msg = f"dim ({dim}) must be divisible by heads ({heads})."
            raise ValueError(msg)
        self.heads, self.dropout = heads, dropout
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, n, dim = x.shape
        return x.view(batch, n, self.heads, dim // self.heads).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        bias: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        context = x if context is None else context
        query = self._split(self.query(x))
        key, value = (self._split(t) for t in self.key_value(context).chunk(2, dim=-1))
        mask = None
        if bias is not None:
            mask = bias.unsqueeze(0).to(query.dtype)
        if key_mask is not None:
            blocked = torch.zeros(key_mask.shape, dtype=query.dtype, device=query.device)
            blocked = blocked.masked_fill(~key_mask, float("-inf"))[:, None, None, :]
            mask = blocked if mask is None else mask + blocked
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        batch, _, n, _ = out.shape
        return self.out(out.transpose(1, 2).reshape(batch, n, -1))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attention(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, heads: int = 8, mlp_ratio: float = 2.0, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = Attention(dim, heads, dropout)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, *, bias=None, key_mask=None) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), bias=bias, key_mask=key_mask)
        return x + self.mlp(self.norm2(x))


class APEG(nn.Module):
    """Atypical Position Encoding Generator: a depth-wise 3 x 3 convolution over tokens placed on the array grid.

    Tokens ``(n, dim)`` are written at their (row, col) cell of a zero raster (spots sharing a cell are
    averaged), convolved, the empty cells are set back to zero, and each token gets the convolution read
    at its cell added to it (the residual of CPVT's PEG). A token's output so depends on other spots only
    through their raster neighbourhood.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, tokens: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        rows, cols = cells[:, 0], cells[:, 1]
        height, width = int(rows.max()) + 1, int(cols.max()) + 1
        flat = rows * width + cols
        raster = tokens.new_zeros(height * width, tokens.shape[1]).index_add_(0, flat, tokens)
        count = tokens.new_zeros(height * width).index_add_(0, flat, torch.ones_like(flat, dtype=tokens.dtype))
        occupied = count > 0
        raster = raster / count.clamp(min=1)[:, None]
        image = raster.T.reshape(1, -1, height, width)
        encoded = self.conv(image).reshape(tokens.shape[1], -1).T * occupied[:, None]  # empty cells back to 0
        return tokens + encoded[flat]


def fusion_loss(outputs: dict[str, torch.Tensor], target: torch.Tensor, alpha: float = 0.3) -> torch.Tensor:
    """TRIPLEX's loss: MSE(ŷ_F, y) + Σ_k [(1 − α) MSE(ŷ_k, y) + α MSE(ŷ_k, ŷ_F)] over the other views.

    ``outputs`` holds ``'fusion'`` and the single-view predictions; the fusion prediction is detached in
    the soft-target terms (knowledge distillation: it teaches the views, they do not pull it).
    """
    fused = outputs["fusion"]
    loss = F.mse_loss(fused, target)
    soft = fused.detach()
    for name, prediction in outputs.items():
        if name == "fusion":
            continue
        loss = loss + (1 - alpha) * F.mse_loss(prediction, target) + alpha * F.mse_loss(prediction, soft)
    return loss


class TokenEncoder(nn.Module):
    """Input tokens projected to ``dim``, transformer blocks, a final LayerNorm (the three views share this shape)."""

    def __init__(self, n_in: int, dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.project = nn.Linear(n_in, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)


class TargetEncoder(TokenEncoder):
    """The spot's patch through a CNN trunk (no pooling, no classifier): its ``h x w`` feature map gives the tokens.

    ResNet18 on 224 px patches gives 7 x 7 tokens of 512 channels, as in the paper; smaller inputs give
    fewer tokens. ``freeze_cnn`` keeps the trunk fixed (the CPU configuration) and trains the blocks only.
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float, *, freeze_cnn: bool) -> None:
        import torchvision

        trunk = torchvision.models.resnet18(weights=None)
        super().__init__(trunk.fc.in_features, dim, depth, heads, mlp_ratio, dropout)
        self.cnn = nn.Sequential(*list(trunk.children())[:-2])
        self.freeze_cnn = freeze_cnn
        if freeze_cnn:
            self.cnn.requires_grad_(False)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if self.freeze_cnn:
            self.cnn.eval()  # frozen batch-norm statistics too
            with torch.no_grad():
                maps = self.cnn(patches)
        else:
            maps = self.cnn(patches)
        x = self.project(maps.flatten(2).transpose(1, 2))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class NeighbourEncoder(TokenEncoder):
    """Frozen per-tile embeddings of the ``grid x grid`` view; blocks with a relative-position bias; masked tiles."""

    def __init__(
        self, n_in: int, dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float, grid: int
    ) -> None:
        super().__init__(n_in, dim, depth, heads, mlp_ratio, dropout)
        self.position = nn.ModuleList(RelativePositionBias(grid, heads) for _ in range(depth))

    def forward(self, tiles: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.project(tiles)
        for block, position in zip(self.blocks, self.position, strict=True):
            x = block(x, bias=position(), key_mask=mask)
        return self.norm(x)


class GlobalEncoder(TokenEncoder):
    """Frozen embeddings of all spots of one slide: a block, APEG on the array grid, the other blocks."""

    def __init__(self, n_in: int, dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__(n_in, dim, max(1, depth), heads, mlp_ratio, dropout)
        self.apeg = APEG(dim)

    def forward(self, spots: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        x = self.project(spots).unsqueeze(0)  # the slide is one sequence
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == 0:
                x = self.apeg(x[0], cells).unsqueeze(0)
        return self.norm(x[0])


def _masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)


class TriplexNet(nn.Module):
    """Target, neighbour and global encoders, the fusion layer and the four gene heads.

    ``forward(batch)`` reads ``patches`` ``(b, 3, s, s)``, ``tiles`` ``(b, grid², f)`` with ``tile_mask``,
    and the slide's ``spots`` ``(n, f)`` with their grid ``cells`` ``(n, 2)`` and the batch spots' rows
    ``index`` ``(b,)`` in it; it returns the ``fusion``, ``target``, ``neighbour`` and ``global``
    predictions ``(b, genes)``.
    """

    def __init__(
        self,
        n_tile_features: int,
        n_spot_features: int,
        n_genes: int,
        *,
        dim: int = 512,
        heads: int = 8,
        depth_target: int = 2,
        depth_neighbour: int = 2,
        depth_global: int = 2,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
        grid: int = 5,
        freeze_target_cnn: bool = False,
    ) -> None:
        super().__init__()
        common = {"dim": dim, "heads": heads, "mlp_ratio": mlp_ratio, "dropout": dropout}
        self.target = TargetEncoder(depth=depth_target, freeze_cnn=freeze_target_cnn, **common)
        self.neighbour = NeighbourEncoder(n_tile_features, depth=depth_neighbour, grid=grid, **common)
        self.global_ = GlobalEncoder(n_spot_features, depth=depth_global, **common)
        self.cross_target = Attention(dim, heads, dropout)
        self.cross_neighbour = Attention(dim, heads, dropout)
        self.fusion_norm = nn.LayerNorm(dim)
        self.heads = nn.ModuleDict(
            {name: nn.Linear(dim, n_genes) for name in ("fusion", "target", "neighbour", "global")}
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        target = self.target(batch["patches"])
        neighbour = self.neighbour(batch["tiles"], batch["tile_mask"])
        global_ = self.global_(batch["spots"], batch["cells"])[batch["index"]]
        query = global_.unsqueeze(1)
        fused = self.cross_target(query, target) + self.cross_neighbour(query, neighbour, key_mask=batch["tile_mask"])
        return {
            "fusion": self.heads["fusion"](self.fusion_norm(fused[:, 0])),
            "target": self.heads["target"](target.mean(1)),
            "neighbour": self.heads["neighbour"](_masked_mean(neighbour, batch["tile_mask"])),
            "global": self.heads["global"](global_),
        }
