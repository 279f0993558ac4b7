"""TRIPLEX's building blocks on tiny tensors: relative-position bias, masked attention, APEG, fusion loss."""

from __future__ import annotations

import pytest
import torch

from stpredict.models.triplex._module import APEG, Attention, RelativePositionBias, fusion_loss


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
    net = TriplexNet(6, 4, 3, dim=16, heads=2, depth_target=1, depth_neighbour=1, depth_global=2)
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
    frozen = TriplexNet(6, 4, 3, dim=16, heads=2, freeze_target_cnn=True)
    assert not any(p.requires_grad for p in frozen.target.cnn.parameters())
