"""Atoms in Morton order: the codes, the order, and a model pass that uses it."""

import numpy as np
import pytest
import torch

from freecg_md.nn import chunks as chunks_module
from freecg_md.nn import model as model_module
from freecg_md.nn import plan as plan_module
from freecg_md.nn.spatial_order import morton_codes, spatial_order
from tests.conftest import full_edges, random_molecule, small_model


def test_morton_codes_interleave_the_cells_bits():
    # cells (x, y, z): (0,0,0) -> 0, (1,0,0) -> 1, (0,1,0) -> 2, (0,0,1) -> 4, (2,0,0) -> 8,
    # (1,1,1) -> 7, (3,0,1) -> 0b001 | 0b1000 | 0b100 = 13
    cells = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [2, 0, 0], [1, 1, 1],
                          [3, 0, 1]], dtype=torch.float64)
    positions = cells * 2.0 + 0.5  # cells of 2 Å, counted from the smallest coordinate
    positions[0] = torch.tensor([0.0, 0.0, 0.0])
    assert morton_codes(positions, 2.0).tolist() == [0, 1, 2, 4, 8, 7, 13]
    assert morton_codes(torch.zeros(0, 3), 2.0).shape == (0,)
    with pytest.raises(ValueError, match="cell_size must be positive"):
        morton_codes(positions, 0.0)


def test_spatial_order_brings_neighbours_together_and_keeps_molecules_whole():
    # A line of 64 atoms 1 Å apart, shuffled: the order walks the line cell by cell.
    generator = torch.Generator().manual_seed(0)
    line = torch.zeros(64, 3, dtype=torch.float64)
    line[:, 0] = torch.arange(64, dtype=torch.float64)
    shuffle = torch.randperm(64, generator=generator)
    order = spatial_order(line[shuffle], 4.0)
    assert sorted(order.tolist()) == list(range(64))
    cells = (line[shuffle][order, 0] // 4).long()
    assert torch.equal(cells, torch.sort(cells).values)
    # Two molecules at the same place: each one's atoms stay together, in batch order.
    batch = torch.tensor([1] * 32 + [0] * 32)[shuffle]
    order = spatial_order(line[shuffle], 4.0, batch)
    assert batch[order].tolist() == [0] * 32 + [1] * 32


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen-threads", "trainable"])
@pytest.mark.parametrize("relabel", ["morton", "random"])
def test_pass_in_spatial_order_equals_the_whole_pass(frozen, relabel, monkeypatch):
    """With the order on (its threshold lowered), energies and forces in runs equal the
    whole pass in float64, for Morton's order and for an arbitrary one, batched too."""
    monkeypatch.setattr(plan_module, "SPATIAL_ORDER_MIN_ATOMS", 1)
    monkeypatch.setattr(chunks_module, "KEEP_GRAPHS_MAX_EDGE_CHANNELS", 0)  # runs, trainable
    orders = []
    original = model_module.spatial_order

    def record(positions, cell_size, batch=None):
        if relabel == "morton":
            orders.append(original(positions, cell_size, batch))
        else:
            generator = torch.Generator().manual_seed(len(orders))
            orders.append(torch.randperm(positions.shape[0], generator=generator))
        return orders[-1]

    monkeypatch.setattr(model_module, "spatial_order", record)
    model = small_model(torch.float64)
    if frozen:
        model.requires_grad_(False)
    first, second = random_molecule(14, seed=21, box=9.0), random_molecule(9, seed=22)
    numbers = torch.as_tensor(list(first.numbers) + list(second.numbers))
    positions = torch.as_tensor(np.concatenate([first.positions, second.positions]))
    edges = torch.cat([full_edges(14), full_edges(9) + 14], 1)
    batch = torch.tensor([0] * 14 + [1] * 9)

    def evaluate(chunk):
        model.edge_chunk_size = chunk
        out = model.energy_and_forces(numbers, positions, edges, batch=batch, num_graphs=2)
        return out["energy"].detach(), out["energies"].detach(), out["forces"].detach()

    whole = evaluate(None)
    assert not orders
    in_order = evaluate(7)
    assert orders and not torch.equal(orders[-1], torch.arange(23))
    for got, want in zip(in_order, whole, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert whole[2].abs().max() > 1e-3
