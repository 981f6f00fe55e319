"""The group CG transform equals e3nn's tensor product and is equivariant."""

import pytest
import torch
from e3nn import o3

from freecg_md.nn import GroupCGTensorProduct, shuffle_abstract_edges

IRREPS_SH = o3.Irreps("1o + 2e")


def to_e3nn_layout(x: torch.Tensor) -> torch.Tensor:
    """(N, 8, T) component-major -> (N, 8T) in e3nn's "Tx1o + Tx2e" layout."""
    n, _, t = x.shape
    return torch.cat(
        [x[:, 0:3].transpose(1, 2).reshape(n, 3 * t), x[:, 3:8].transpose(1, 2).reshape(n, 5 * t)],
        dim=1,
    )


def test_equals_e3nn_fully_connected_tensor_product():
    torch.manual_seed(1)
    groups, size, n = 3, 4, 6
    tp = GroupCGTensorProduct(groups, size).double()
    a = torch.randn(n, 8, groups * size, dtype=torch.float64)
    b = torch.randn(n, 8, groups * size, dtype=torch.float64)
    out = tp(a, b)
    irreps = o3.Irreps(f"{size}x1o + {size}x2e")
    reference = o3.FullyConnectedTensorProduct(
        irreps, irreps, irreps, shared_weights=False, internal_weights=False
    ).double()
    assert reference.weight_numel == 4 * size**3  # exactly the four sparse paths
    for g in range(groups):
        channels = slice(g * size, (g + 1) * size)
        weight = tp.weight[g].reshape(1, -1).expand(n, -1)
        expected = reference(
            to_e3nn_layout(a[:, :, channels]), to_e3nn_layout(b[:, :, channels]), weight
        )
        torch.testing.assert_close(to_e3nn_layout(out[:, :, channels]), expected)


@pytest.mark.parametrize("parity", [1, -1])
def test_equivariant_under_rotation_and_reflection(parity):
    torch.manual_seed(2)
    tp = GroupCGTensorProduct(2, 4).double()
    a = torch.randn(5, 8, 8, dtype=torch.float64)
    b = torch.randn(5, 8, 8, dtype=torch.float64)
    rotation = o3.rand_matrix(dtype=torch.float64) * parity
    d = IRREPS_SH.D_from_matrix(rotation)
    rotated_first = tp(torch.einsum("ij,njf->nif", d, a), torch.einsum("ij,njf->nif", d, b))
    rotated_after = torch.einsum("ij,njf->nif", d, tp(a, b))
    torch.testing.assert_close(rotated_first, rotated_after)


def test_groups_do_not_mix_and_shuffle_moves_channels():
    torch.manual_seed(3)
    tp = GroupCGTensorProduct(4, 2).double()
    a = torch.randn(3, 8, 8, dtype=torch.float64)
    b = torch.randn(3, 8, 8, dtype=torch.float64)
    base = tp(a, b)
    a2 = a.clone()
    a2[:, :, 0:2] += 1.0  # only group 0 changes
    changed = (tp(a2, b) - base).abs().amax(dim=(0, 1)) > 1e-12
    assert changed[:2].all() and not changed[2:].any()
    x = torch.arange(8.0)
    assert shuffle_abstract_edges(x, 3).tolist() == [3, 4, 5, 6, 7, 0, 1, 2]
