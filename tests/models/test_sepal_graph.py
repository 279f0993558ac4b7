"""SEPAL's building blocks: local graphs around each spot and the 2-D sinusoidal position encoding."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import stpredict as st
from stpredict.models._nn import sinusoidal_2d
from stpredict.models.sepal._graph import local_graphs


def _square_grid(size=5):
    rows, cols = np.divmod(np.arange(size * size), size)
    grid = np.column_stack([rows, cols])
    chebyshev = np.abs(grid[:, None, :] - grid[None, :, :]).max(axis=2)
    return sp.csr_matrix(chebyshev == 1), grid  # 8 neighbours, as legacy ST's grid graph


def _graph(graphs, i):
    nodes = graphs.nodes[graphs.node_ptr[i] : graphs.node_ptr[i + 1]]
    offsets = graphs.offsets[graphs.node_ptr[i] : graphs.node_ptr[i + 1]]
    edges = graphs.edges[:, graphs.edge_ptr[i] : graphs.edge_ptr[i + 1]]
    return nodes, offsets, edges


@pytest.mark.parametrize(("n_hops", "centre", "expected"), [(1, 12, 9), (2, 12, 25), (1, 0, 4), (2, 0, 9), (1, 2, 6)])
def test_each_graph_is_its_centre_and_the_spots_within_n_hops(n_hops, centre, expected):
    adjacency, grid = _square_grid()
    graphs = local_graphs(adjacency, grid, n_hops=n_hops)
    nodes, offsets, edges = _graph(graphs, centre)
    assert nodes[0] == centre and len(nodes) == expected == len(set(nodes))
    distance = np.abs(grid[nodes] - grid[centre]).max(axis=1)  # hops on the 8-neighbour grid
    assert distance.max() <= n_hops and (distance <= n_hops).sum() == len(nodes)
    np.testing.assert_array_equal(offsets, grid[nodes] - grid[centre])
    # edges: exactly the grid edges among the graph's nodes, in local positions
    expected_edges = {(a, b) for a in range(len(nodes)) for b in range(len(nodes)) if adjacency[nodes[a], nodes[b]]}
    assert set(map(tuple, edges.T.tolist())) == expected_edges


def test_by_hand_on_a_corner_spot():
    adjacency, grid = _square_grid(3)
    nodes, offsets, edges = _graph(local_graphs(adjacency, grid, n_hops=1), 0)
    assert nodes.tolist() == [0, 1, 3, 4]  # (0,0) then (0,1), (1,0), (1,1)
    assert offsets.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert edges.shape[1] == 2 * 6  # the 4 spots of a 2x2 block are all joined: 6 edges, both directions


def test_batch_is_a_disjoint_union_with_centres_at_ptr():
    adjacency, grid = _square_grid()
    graphs = local_graphs(adjacency, grid, n_hops=1)
    batch = graphs.batch(np.array([12, 0, 24]))
    assert batch["ptr"].tolist() == [0, 9, 13, 17]
    assert batch["spots"][batch["ptr"][:-1]].tolist() == [12, 0, 24]
    assert np.bincount(batch["batch"]).tolist() == [9, 4, 4]
    source, target = batch["edge_index"]
    assert (batch["batch"][source] == batch["batch"][target]).all()  # no edge between two graphs
    assert adjacency[batch["spots"][source], batch["spots"][target]].all()


def test_real_grid_graph_of_the_crop(crop):
    st.pp.spatial_graph(crop)
    grid = crop.obs[["array_row", "array_col"]].to_numpy()
    graphs = local_graphs(crop.obsp["spatial_connectivities"], grid, n_hops=1)
    sizes = np.diff(graphs.node_ptr)
    assert graphs.n_graphs == crop.n_obs and sizes.max() == 9 and sizes.min() >= 1
    assert (np.abs(graphs.offsets).max(axis=1) <= 1).all()  # 1 hop on a square grid: offsets in {-1, 0, 1}
    with pytest.raises(ValueError, match="n_hops"):
        local_graphs(crop.obsp["spatial_connectivities"], grid, n_hops=0)


def test_sinusoidal_2d():
    codes = sinusoidal_2d(np.array([[0, 0], [1, 0], [0, 1], [-1, 0]]), 16)
    assert codes.shape == (4, 16)
    np.testing.assert_allclose(codes[0], np.tile(np.repeat([0.0, 1.0], 4), 2))  # sin 0 = 0, cos 0 = 1
    np.testing.assert_allclose(codes[1, 8:], codes[0, 8:])  # moving along rows leaves the column half alone
    np.testing.assert_allclose(codes[1, 0], np.sin(1.0), rtol=1e-6)  # lowest frequency is 1
    np.testing.assert_allclose(codes[3, :4], -codes[1, :4], atol=1e-7)  # sin is odd
    assert not np.allclose(codes[1], codes[2])
    with pytest.raises(ValueError, match="divisible by 4"):
        sinusoidal_2d(np.zeros((1, 2)), 10)


def test_gnn_reads_out_one_row_per_local_graph():
    import torch

    from stpredict.models.sepal._module import SepalGNN

    adjacency, grid = _square_grid()
    batch = local_graphs(adjacency, grid, n_hops=1).batch(np.array([12, 0, 24, 7]))
    torch.manual_seed(0)
    net = SepalGNN(6, 3, hidden=[8])
    x = torch.randn(len(batch["spots"]), 6)
    out = net(x, torch.from_numpy(batch["edge_index"]), torch.from_numpy(batch["batch"]))
    assert out.shape == (4, 3)
    # a graph's output depends on its own nodes only
    x2 = x.clone()
    x2[batch["batch"] == 1] += 5.0
    out2 = net(x2, torch.from_numpy(batch["edge_index"]), torch.from_numpy(batch["batch"]))
    torch.testing.assert_close(out2[[0, 2, 3]], out[[0, 2, 3]])
    assert not torch.allclose(out2[1], out[1])
    assert [type(c).__name__ for c in SepalGNN(6, 3, conv="GCNConv").convs] == ["GCNConv"]
    with pytest.raises(ValueError, match="conv must be one of"):
        SepalGNN(6, 3, conv="GATConv")
