"""TRIPLEX's building blocks on tiny tensors: relative-position bias, masked attention, APEG, fusion loss."""

from __future__ import annotations

import pytest
import torch

from stpredict.models.triplex._module import APEG, Attention, RelativePositionBias, fusion_loss
from stpredict.models.triplex._params import TriplexParams


def test_relative_position_bias_table_and_shared_offsets():
    bias = RelativePositionBias(grid=5, heads=3)
    assert bias.table.shape == (81, 3)  # 9 x 9 offsets for a 5 x 5 grid
    values = bias()
    assert values.shape == (3, 25, 25)
    cell = lambda r, c: 5 * r + c  # noqa: E731
    # the same offset (+1, +1) anywhere on the grid reads the same table row
    torch.testing.assert_close(values[:, cell(0, 0), cell(1, 1)], values[:, cell(2, 3), cell(3, 4)])
    assert not torch.equal(values[:, cell(0, 0), cell(1, 1)], values[:, cell(1, 1), cell(0, 0)])


def test_masked_keys_get_no_attention():
    torch.manual_seed(0)
    attention = Attention(8, heads=2).eval()
    x = torch.randn(2, 25, 8)
    key_mask = torch.ones(2, 25, dtype=torch.bool)
    key_mask[0, :10] = False  # tiles outside the image
    before = attention(x, key_mask=key_mask)
    changed = x.clone()
    changed[0, :10] = torch.randn(10, 8) * 100  # what the masked tiles hold must not matter to the others
    after = attention(changed, key_mask=key_mask)
    torch.testing.assert_close(after[0, 10:], before[0, 10:])
    torch.testing.assert_close(after[1], before[1])
    bias = RelativePositionBias(5, 2)()
    assert attention(x, bias=bias, key_mask=key_mask).shape == x.shape


def _spots():
    # 5 spots on a 3 x 4 grid; cell (1, 1) is empty
    cells = torch.tensor([[0, 0], [0, 1], [1, 0], [2, 3], [1, 2]])
    tokens = torch.arange(5 * 2, dtype=torch.float32).reshape(5, 2) + 1
    return tokens, cells


def test_apeg_places_tokens_at_their_cells():
    tokens, cells = _spots()
    apeg = APEG(2)
    with torch.no_grad():
        apeg.conv.weight.zero_()
        apeg.conv.bias.zero_()
        apeg.conv.weight[:, 0, 1, 0] = 1.0  # each cell reads its left neighbour
    out = apeg(tokens, cells)
    left = {0: None, 1: 0, 2: None, 3: None, 4: None}  # spot 4 at (1, 2): its left cell (1, 1) is empty
    for spot, neighbour in left.items():
        expected = tokens[spot] + (tokens[neighbour] if neighbour is not None else 0)
        torch.testing.assert_close(out[spot], expected)


def test_apeg_output_depends_on_other_spots_only_through_the_3x3_neighbourhood():
    tokens, cells = _spots()
    torch.manual_seed(0)
    apeg = APEG(2)
    before = apeg(tokens, cells)
    changed = tokens.clone()
    changed[0] += 10.0  # spot 0 at (0, 0): neighbours within one cell are spots 1 (0, 1) and 2 (1, 0)
    after = apeg(changed, cells)
    moved = ~torch.isclose(after, before).all(dim=1)
    assert moved.tolist() == [True, True, True, False, False]


def test_fusion_loss_by_hand_and_detached_soft_targets():
    y = torch.tensor([[1.0, 2.0]])
    fused = torch.tensor([[1.5, 2.0]], requires_grad=True)
    view = torch.tensor([[0.0, 2.0]], requires_grad=True)
    loss = fusion_loss({"fusion": fused, "target": view}, y, alpha=0.3)
    # MSE(F, y) = 0.125; MSE(T, y) = 0.5; MSE(T, F) = 1.125
    assert loss.item() == pytest.approx(0.125 + 0.7 * 0.5 + 0.3 * 1.125)
    loss.backward()
    torch.testing.assert_close(fused.grad, torch.tensor([[0.5, 0.0]]))  # from its own MSE only


def test_triplex_net_shapes_and_a_training_step():
    from stpredict.models.triplex._module import TriplexNet

    torch.manual_seed(0)
    net = TriplexNet(6, 4, 3, TriplexParams(dim=16, heads=2, depth_global=2, freeze_target_cnn=False))
    n_slide, b = 12, 4
    cells = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij"), -1).reshape(-1, 2)
    batch = {
        "patches": torch.randn(b, 3, 32, 32),
        "tiles": torch.randn(b, 25, 6),
        "tile_mask": torch.rand(b, 25) > 0.3,
        "spots": torch.randn(n_slide, 4),
        "cells": cells,
        "index": torch.tensor([0, 5, 6, 11]),
    }
    batch["tile_mask"][:, 12] = True  # the spot's own tile is always inside the image
    out = net(batch)
    assert set(out) == {"fusion", "target", "neighbour", "global"}
    assert all(v.shape == (b, 3) for v in out.values())
    y = torch.randn(b, 3)
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = fusion_loss(net(batch), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    frozen = TriplexNet(6, 4, 3, TriplexParams(dim=16, heads=2, freeze_target_cnn=True))
    assert not any(p.requires_grad for p in frozen.encoders["target"].cnn.parameters())


def _toy_batch(b: int = 4, n_slide: int = 12) -> dict[str, torch.Tensor]:
    cells = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij"), -1).reshape(-1, 2)
    mask = torch.rand(b, 25) > 0.3
    mask[:, 12] = True
    return {
        "patches": torch.randn(b, 3, 32, 32),
        "tiles": torch.randn(b, 25, 6),
        "tile_mask": mask,
        "spots": torch.randn(n_slide, 4),
        "cells": cells,
        "index": torch.tensor([0, 5, 6, 11]),
    }


def test_peg_ignores_positions_apeg_reads_them():
    from stpredict.models.triplex._module import APEG, PEG

    torch.manual_seed(0)
    tokens = torch.randn(5, 4)
    cells = torch.tensor([[0, 0], [0, 1], [3, 3], [1, 0], [2, 2]])
    shuffled = cells[torch.tensor([4, 3, 2, 1, 0])]
    peg, apeg = PEG(4), APEG(4)
    torch.testing.assert_close(peg(tokens, cells), peg(tokens, shuffled))
    assert not torch.allclose(apeg(tokens, cells), apeg(tokens, shuffled))
    # 5 tokens on a 3 x 3 square: token 0's 3 x 3 window holds tokens 1, 3 and 4 (row by row), not 2
    perturbed = tokens.clone()
    perturbed[2] += 10
    torch.testing.assert_close(peg(tokens, cells)[0], peg(perturbed, cells)[0])
    perturbed = tokens.clone()
    perturbed[4] += 10
    assert not torch.allclose(peg(tokens, cells)[0], peg(perturbed, cells)[0])


@pytest.mark.parametrize(
    ("views", "fusion"),
    [
        (("target", "neighbour"), "cross_attention"),  # no global view: a learned query
        (("neighbour", "global"), "cross_attention"),
        (("global",), "cross_attention"),
        (("target", "neighbour", "global"), "sum"),
        (("target", "neighbour", "global"), "concat"),
    ],
)
def test_ablations_build_only_their_views_and_train(views, fusion):
    from stpredict.models.triplex._module import TriplexNet

    torch.manual_seed(0)
    net = TriplexNet(
        6,
        4,
        3,
        TriplexParams(dim=16, heads=2, views=views, fusion=fusion, position_encoding="none", freeze_target_cnn=False),
    )
    assert set(net.encoders) == set(views)
    batch = {k: v for k, v in _toy_batch().items() if k != "patches" or "target" in views}
    out = net(batch)
    assert set(out) == {"fusion", *views}
    y = torch.randn(4, 3)
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-2)
    first = fusion_loss(net(batch), y).item()
    for _ in range(15):
        loss = fusion_loss(net(batch), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.7 * first


def test_bad_ablation_names_are_refused():

    with pytest.raises(ValueError, match="views must be a non-empty subset"):
        TriplexParams(views=("target", "local"))
    with pytest.raises(ValueError, match="fusion must be one of"):
        TriplexParams(fusion="gate")
    with pytest.raises(ValueError, match="position_encoding must be one of"):
        TriplexParams(position_encoding="sincos")


def test_a_frozen_target_trunk_gives_the_same_tokens_from_precomputed_maps():
    from stpredict.models.triplex._module import TargetEncoder

    torch.manual_seed(0)
    encoder = TargetEncoder(dim=16, depth=1, heads=2, mlp_ratio=2.0, dropout=0.0, freeze_cnn=True).eval()
    patches = torch.randn(3, 3, 32, 32)
    maps = encoder.feature_maps(patches)
    assert maps.shape == (3, 512, 1, 1) and not maps.requires_grad
    torch.testing.assert_close(encoder(patches), encoder(maps=maps))
