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

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._data import Key
from .._nn import Standardize
from ._params import TriplexParams


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


def _feed_forward(dim: int, mlp_ratio: float, dropout: float) -> nn.Sequential:
    hidden = int(dim * mlp_ratio)
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
    )


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attention(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, heads: int = 8, mlp_ratio: float = 2.0, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = Attention(dim, heads, dropout)
        self.mlp = _feed_forward(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, *, bias=None, key_mask=None) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), bias=bias, key_mask=key_mask)
        return x + self.mlp(self.norm2(x))


class CrossBlock(nn.Module):
    """Pre-norm cross-attention block: ``q + attention(LN(q), LN(context))``, then ``+ MLP(LN(.))``.

    The query keeps its own content (the residual): in TRIPLEX's fusion the query is the spot's global
    token, whose view of the slide and of the spot reaches the prediction through it (the public code's
    ``CrossEncoder``).
    """

    def __init__(self, dim: int, heads: int = 8, mlp_ratio: float = 2.0, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm_query, self.norm_context, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = Attention(dim, heads, dropout)
        self.mlp = _feed_forward(dim, mlp_ratio, dropout)

    def forward(self, query: torch.Tensor, context: torch.Tensor, *, key_mask=None) -> torch.Tensor:
        x = query + self.attention(self.norm_query(query), self.norm_context(context), key_mask=key_mask)
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


class PEG(nn.Module):
    """CPVT's Position Encoding Generator as TRIPLEX's ablation (Table 4): positions ignored.

    The slide's tokens, in their order, are zero-padded to a square number, laid row by row on a square
    raster, convolved depth-wise 3 x 3, and read back (residual), as for a natural image.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, tokens: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        n, dim = tokens.shape
        side = math.ceil(math.sqrt(n))
        square = torch.cat([tokens, tokens.new_zeros(side * side - n, dim)])
        encoded = self.conv(square.T.reshape(1, dim, side, side)).reshape(dim, -1).T
        return tokens + encoded[:n]


POSITION_ENCODINGS = {"apeg": APEG, "peg": PEG, "none": None}


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

    def feature_maps(self, patches: torch.Tensor) -> torch.Tensor:
        """The trunk's ``(b, 512, h, w)`` maps; a frozen trunk runs in eval mode without gradients."""
        if not self.freeze_cnn:
            return self.cnn(patches)
        self.cnn.eval()  # frozen batch-norm statistics too
        with torch.no_grad():
            return self.cnn(patches)

    def forward(self, patches: torch.Tensor | None = None, maps: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens of ``patches``, or of their precomputed ``maps`` (a frozen trunk's, computed once per slide)."""
        maps = self.feature_maps(patches) if maps is None else maps
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
    """Frozen embeddings of all spots of one slide: a block, the position encoding (APEG), the other blocks.

    ``position_encoding``: ``'apeg'`` (on the array grid), ``'peg'`` (CPVT's, on a square of the tokens in
    their order) or ``'none'``.
    """

    def __init__(
        self,
        n_in: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        dropout: float,
        position_encoding: str = "apeg",
    ) -> None:
        super().__init__(n_in, dim, max(1, depth), heads, mlp_ratio, dropout)
        if position_encoding not in POSITION_ENCODINGS:
            msg = f"position_encoding must be one of {list(POSITION_ENCODINGS)}, got {position_encoding!r}."
            raise ValueError(msg)
        encoder = POSITION_ENCODINGS[position_encoding]
        self.position = None if encoder is None else encoder(dim)

    def forward(self, spots: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        x = self.project(spots).unsqueeze(0)  # the slide is one sequence
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == 0 and self.position is not None:
                x = self.position(x[0], cells).unsqueeze(0)
        return self.norm(x[0])


def _masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)


class TriplexNet(nn.Module):
    """Target, neighbour and global encoders, the fusion layer and one gene head per view and for the fusion.

    ``forward(batch)`` reads ``patches`` ``(b, 3, s, s)`` (or a frozen trunk's ``target_maps``), ``tiles`` ``(b, grid², f)`` with ``tile_mask``,
    and the slide's ``spots`` ``(n, f)`` with their grid ``cells`` ``(n, 2)`` and the batch spots' rows
    ``index`` ``(b,)`` in it (only what its ``views`` read); it returns the ``fusion`` prediction and one
    per view ``(b, genes)``.

    Fusion (``'cross_attention'``): ``depth_fusion`` pre-norm cross-attention blocks (:class:`CrossBlock`,
    residual and feed-forward) query the global token against the target tokens and, with the same blocks,
    against the neighbour tokens; the two results are summed, normalised and read by a linear layer.

    ``params`` (:class:`TriplexParams`, checked when made) sizes every part; its defaults are the CPU model's.

    Ablations (TRIPLEX's Tables 3-5): ``views`` a subset of the three (without the global view the
    cross-attention query is a learned token; with the global view alone it is the fused token);
    ``fusion='sum'`` (pooled view tokens added) or ``'concat'`` (concatenated, then a linear layer) instead
    of cross-attention; ``position_encoding`` of the global view.
    """

    def __init__(self, n_tile_features: int, n_spot_features: int, n_genes: int, params: TriplexParams) -> None:
        super().__init__()
        p = params
        self.views, self.fusion = p.views, p.fusion
        dim = p.dim
        common = {"dim": dim, "heads": p.heads, "mlp_ratio": p.mlp_ratio, "dropout": p.dropout}
        self.encoders = nn.ModuleDict()
        if "target" in self.views:
            self.encoders["target"] = TargetEncoder(depth=p.depth_target, freeze_cnn=p.freeze_target_cnn, **common)
        if "neighbour" in self.views:
            self.encoders["neighbour"] = NeighbourEncoder(
                n_tile_features, depth=p.depth_neighbour, grid=p.grid, **common
            )
        if "global" in self.views:
            self.encoders["global"] = GlobalEncoder(
                n_spot_features, depth=p.depth_global, position_encoding=p.position_encoding, **common
            )
        if self.fusion == "cross_attention":
            # one stack of blocks queried against the target and then the neighbour tokens (the public code's
            # FusionEncoder shares its CrossEncoder between the two views)
            self.cross = nn.ModuleList(CrossBlock(**common) for _ in range(int(p.depth_fusion)))
            if "global" not in self.views:
                self.query = nn.Parameter(torch.zeros(1, 1, dim))
                nn.init.trunc_normal_(self.query, std=0.02)
        elif self.fusion == "concat":
            self.concat = nn.Linear(len(self.views) * dim, dim)
        self.fusion_norm = nn.LayerNorm(dim)
        self.heads = nn.ModuleDict({name: nn.Linear(dim, n_genes) for name in ("fusion", *self.views)})

    def _tokens(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = {}
        if "target" in self.views:
            tokens["target"] = self.encoders["target"](batch.get("patches"), maps=batch.get("target_maps"))
        if "neighbour" in self.views:
            tokens["neighbour"] = self.encoders["neighbour"](batch["tiles"], batch["tile_mask"])
        if "global" in self.views:
            tokens["global"] = self.encoders["global"](batch["spots"], batch["cells"])[batch[Key.INDEX]]
        return tokens

    def _fuse(self, tokens: dict[str, torch.Tensor], pooled: dict[str, torch.Tensor], mask: torch.Tensor | None):
        if self.fusion == "sum":
            return sum(pooled.values())
        if self.fusion == "concat":
            return self.concat(torch.cat([pooled[v] for v in self.views], dim=1))
        if "global" in tokens:
            query = tokens["global"].unsqueeze(1)
        else:
            query = self.query.expand(next(iter(tokens.values())).shape[0], -1, -1)
        attended = []
        for view in ("target", "neighbour"):
            if view in tokens:
                fused = query
                for block in self.cross:
                    fused = block(fused, tokens[view], key_mask=mask if view == "neighbour" else None)
                attended.append(fused[:, 0])
        return sum(attended) if attended else query[:, 0]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = self._tokens(batch)
        mask = batch.get("tile_mask")
        pooled = {view: _pool(view, t, mask) for view, t in tokens.items()}
        fused = self._fuse(tokens, pooled, mask)
        outputs = {"fusion": self.heads["fusion"](self.fusion_norm(fused))}
        outputs.update({view: self.heads[view](pooled[view]) for view in self.views})
        return outputs


def _pool(view: str, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """One vector per spot and view: mean target token, mean unmasked neighbour token, the global token."""
    if view == "target":
        return tokens.mean(1)
    if view == "neighbour":
        return _masked_mean(tokens, mask)
    return tokens


class TriplexRegressor(nn.Module):
    """:class:`TriplexNet` with its input scalings; ``forward`` gives the fusion prediction, ``training_loss`` the fusion loss."""

    def __init__(self, n_features: int, n_tile_features: int, n_genes: int, params: TriplexParams) -> None:
        super().__init__()
        self.scale_in = Standardize(n_features)  # the global view's spot embeddings
        self.scale_tiles = Standardize(n_tile_features)
        self.register_buffer("pixel_mean", torch.zeros(3))
        self.register_buffer("pixel_std", torch.ones(3))
        self.net = TriplexNet(n_tile_features, n_features, n_genes, params)
        self.alpha, self.fusion_loss = params.alpha, params.fusion_loss

    def scale_pixels(self, patches: torch.Tensor) -> torch.Tensor:
        return (patches - self.pixel_mean.view(1, 3, 1, 1)) / self.pixel_std.view(1, 3, 1, 1)

    def _outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        scaled = dict(batch)  # a batch carries only what the views read
        if "patches" in batch:
            scaled["patches"] = self.scale_pixels(batch["patches"])
        if "tiles" in batch:
            scaled["tiles"] = self.scale_tiles(batch["tiles"]) * batch["tile_mask"].unsqueeze(-1)
        if "spots" in batch:
            scaled["spots"] = self.scale_in(batch["spots"])
        return self.net(scaled)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._outputs(batch)["fusion"]

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        outputs = self._outputs(batch)
        if not self.fusion_loss:  # the ablation: the fused prediction's MSE only, the view heads untrained
            return nn.functional.mse_loss(outputs["fusion"], batch[Key.Y])
        return fusion_loss(outputs, batch[Key.Y], self.alpha)
