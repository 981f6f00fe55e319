"""``FreeCG.reference()`` computes the authors' released forward pass.

``released_atom_energies`` below is an independent transcription of the released code's
equations (ViSNet's interaction layer with the group CG transform on abstract edges, as
../shared/FREECG_SPEC.md states them), written for clarity, not speed: its own graph with
self loops from a brute-force search over periodic images, its own radial basis and cutoff,
separate q, k, s and dk, dv maps, the vector message without cutoff, the edge update's
rejection as the released code writes it (``a - (a . Y) Y`` of each projection, with
``-Y`` for the neighbour), e3nn's ``FullyConnectedTensorProduct`` for each group of abstract
edges on the released layout, and the gated head with a plain norm. It reads only the
weights of the model it is compared with. The model in its reference setting must agree
with it to float64 rounding on a small molecule, on chignolin, batched and periodic; with
any one of its choices changed it must not.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from e3nn import o3
from torch.nn import functional as F

from freecg_md.data import load_chignolin
from freecg_md.neighbors import build_neighbor_list
from freecg_md.nn import FreeCG, FreeCGConfig
from tests.conftest import SMALL, random_molecule

TOLERANCE = 1e-11  # eV per atom, float64; the outputs are of order 1


def reference_model(seed: int = 0, **overrides) -> FreeCG:
    """A float64 model in the reference setting with weights large enough that every
    branch matters (the authors' initial group-CG weights are tiny)."""
    torch.manual_seed(seed)
    model = FreeCG(FreeCGConfig.reference(**{**SMALL, **overrides})).double()
    with torch.no_grad():
        for layer in model.layers:
            if layer.group_cg is not None:
                layer.group_cg.weight.normal_(0.0, 0.5)
            for name in ("enhancer", "f_proj"):
                if hasattr(layer, name):
                    getattr(layer, name).bias.normal_(0.0, 0.3)
    return model


# --- the transcription -------------------------------------------------------------------

def brute_force_graph(positions: torch.Tensor, cutoff: float, cell: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (target i, source j, image) with ``|r_j + image - r_i| < cutoff``, self loops
    (i, i, 0) included: ``(i, j, vectors r_j + image - r_i)``."""
    images = [torch.zeros(3, dtype=positions.dtype)]
    if cell is not None:
        images = [torch.tensor(n, dtype=positions.dtype) @ cell
                  for n in itertools.product((-1, 0, 1), repeat=3)]
    targets, sources, vectors = [], [], []
    n_atoms = positions.shape[0]
    for image in images:
        is_origin = bool((image == 0).all())
        for i in range(n_atoms):
            for j in range(n_atoms):
                vector = positions[j] + image - positions[i]
                if (i == j and is_origin) or torch.linalg.vector_norm(vector) < cutoff:
                    targets.append(i)
                    sources.append(j)
                    vectors.append(vector)
    return torch.tensor(targets), torch.tensor(sources), torch.stack(vectors)


def expnorm(d: torch.Tensor, cutoff: float, k: int) -> torch.Tensor:
    """The ExpNormal basis times the cutoff. Its means and widths are float32 numbers in
    both codes (buffers made in torch's default dtype, then cast with the model)."""
    start = math.exp(-cutoff)
    means = torch.linspace(start, 1.0, k, dtype=torch.float32).to(d.dtype)
    betas = torch.full((k,), (2.0 / k * (1.0 - start)) ** -2, dtype=torch.float32).to(d.dtype)
    return cosine(d, cutoff)[:, None] * torch.exp(
        -betas * (torch.exp(-5.0 / cutoff * d)[:, None] - means) ** 2)


def cosine(d: torch.Tensor, cutoff: float) -> torch.Tensor:
    return 0.5 * (torch.cos(d * math.pi / cutoff) + 1.0) * (d < cutoff)


def linear(module: torch.nn.Linear, x: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
    """``x W^T + b`` with rows ``rows`` of the weight (one map out of a merged one)."""
    weight = module.weight if rows is None else module.weight[rows]
    bias = module.bias if rows is None or module.bias is None else module.bias[rows]
    out = x @ weight.T
    return out if bias is None else out + bias


def to_released_layout(vectors: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, 8, F) -> (N, G, T*3 + T*5): each group's l = 1 parts, then its l = 2 parts,
    channel-major, as e3nn's ``Tx1o + Tx2e`` lays them out."""
    n, _, width = vectors.shape
    t = width // groups
    per_group = vectors.permute(0, 2, 1).reshape(n, groups, t, 8)
    return torch.cat([per_group[..., :3].reshape(n, groups, t * 3),
                      per_group[..., 3:].reshape(n, groups, t * 5)], dim=2)


def from_released_layout(values: torch.Tensor, groups: int, width: int) -> torch.Tensor:
    n, t = values.shape[0], width // groups
    l1 = values[..., :t * 3].reshape(n, groups, t, 3)
    l2 = values[..., t * 3:].reshape(n, groups, t, 5)
    return torch.cat([l1, l2], dim=3).reshape(n, width, 8).permute(0, 2, 1)


def rejection(a: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``a - (a . d) d`` per channel: a (E, 8, F), d (E, 8)."""
    along = (a * direction[:, :, None]).sum(dim=1, keepdim=True)
    return a - along * direction[:, :, None]


def released_atom_energies(model: FreeCG, numbers: torch.Tensor, positions: torch.Tensor,
                           cell: torch.Tensor | None = None) -> torch.Tensor:
    """Standardised atom energies (N,) of the released code's equations with ``model``'s
    weights."""
    config = model.config
    width, heads, groups = config.hidden, config.num_heads, config.num_groups
    t = width // groups
    target, source, vectors = brute_force_graph(positions, config.cutoff, cell)
    n = numbers.shape[0]
    distance = torch.linalg.vector_norm(vectors, dim=1)
    loop = distance == 0
    unit = torch.where(loop[:, None], vectors, vectors / distance.clamp_min(1e-300)[:, None])
    sh = o3.spherical_harmonics(o3.Irreps("1o + 2e"), unit, normalize=False,
                                normalization="norm")
    sh = torch.where(loop[:, None], torch.zeros_like(sh), sh)
    rbf = expnorm(distance, config.cutoff, config.num_basis)
    phi = cosine(distance, config.cutoff)
    species = model.species_index[numbers]

    # Neighbour embedding, without self loops.
    ne = model.neighbor_embedding
    real = ~loop
    weights = linear(ne.distance_proj, rbf[real]) * phi[real, None]
    summed = torch.zeros(n, width, dtype=positions.dtype).index_add_(
        0, target[real], ne.neighbor_embedding.weight[species[source[real]]] * weights)
    x = linear(ne.combine, torch.cat([ne.embedding.weight[species], summed], dim=1))
    f = (x[target] + x[source]) * linear(model.edge_embedding.edge_proj, rbf)
    v = torch.zeros(n, 8, width, dtype=positions.dtype)

    def head_split(values: torch.Tensor) -> torch.Tensor:
        return values.reshape(-1, heads, width // heads)

    for index, layer in enumerate(model.layers):
        last = index == len(model.layers) - 1
        xn = F.layer_norm(x, (width,), layer.layernorm.weight, layer.layernorm.bias,
                          layer.layernorm.eps)
        q = head_split(linear(layer.qks_proj, xn, slice(0, width)))
        k = head_split(linear(layer.qks_proj, xn, slice(width, 2 * width)))
        s = head_split(linear(layer.qks_proj, xn, slice(2 * width, 3 * width)))
        dk = head_split(F.silu(linear(layer.dkdv_proj, f, slice(0, width))))
        dv = head_split(F.silu(linear(layer.dkdv_proj, f, slice(width, 2 * width))))
        u1, u2, u3 = linear(layer.vec_proj, v).split(width, dim=-1)
        vec_dot = (u1 * u2).sum(dim=1)

        # Messages along each edge j -> i.
        v_j = v[source]
        enhance = linear(layer.enhancer, (v_j * sh[:, :, None]).sum(dim=1))
        attention = F.silu((q[target] * k[source] * dk).sum(-1) + enhance) * phi[:, None]
        m = (s[source] * dv * attention[:, :, None]).reshape(-1, width)
        g1, g2 = F.silu(linear(layer.gate_proj, m)).split(width, dim=-1)
        big_m = v_j * g1[:, None, :] + g2[:, None, :] * sh[:, :, None]
        a = torch.zeros(n, width, dtype=x.dtype).index_add_(0, target, m)
        abstract = torch.zeros_like(v).index_add_(0, target, big_m)

        o1, o2, o3_ = linear(layer.o_proj, a).split(width, dim=-1)
        dx = vec_dot * o2 + o3_
        node = u3 * o1[:, None, :]
        if layer.group_cg is None:
            dvec = abstract + node
        else:
            irreps = o3.Irreps(f"{t}x1o + {t}x2e")
            product = o3.FullyConnectedTensorProduct(irreps, irreps, irreps,
                                                     shared_weights=False,
                                                     internal_weights=False).double()
            weight = layer.group_cg.weight.reshape(1, groups, -1).expand(n, -1, -1)
            coupled = product(to_released_layout(abstract, groups),
                              to_released_layout(node, groups), weight)
            coupled = from_released_layout(coupled, groups, width)
            shift = groups + groups // 2
            coupled = torch.cat([coupled[..., shift:], coupled[..., :shift]], dim=-1)
            dvec = coupled + abstract
        if not last:
            w1 = rejection(linear(layer.w_center_proj, v)[target], sh)
            w2 = rejection(linear(layer.w_neighbor_proj, v)[source], -sh)
            f = f + F.silu(linear(layer.f_proj, f)) * (w1 * w2).sum(dim=1)
        x, v = x + dx, v + dvec

    x = F.layer_norm(x, (width,), model.out_norm.weight, model.out_norm.bias,
                     model.out_norm.eps)
    for number, block in enumerate(model.head.blocks):
        norms = torch.linalg.vector_norm(linear(block.vec1_proj, v), dim=1)
        hidden = F.silu(linear(block.update_net[0], torch.cat([x, norms], dim=1)))
        x, gate = linear(block.update_net[2], hidden).split(block.out_channels, dim=-1)
        v = gate[:, None, :] * linear(block.vec2_proj, v)
        if number == 0:
            x = F.silu(x)
    return x.squeeze(-1)


# --- the comparisons ---------------------------------------------------------------------

def model_atom_energies(model: FreeCG, numbers: torch.Tensor, positions: torch.Tensor,
                        cell: torch.Tensor | None = None) -> torch.Tensor:
    """Our model through its public API, with its own neighbour list (standardisation is
    the identity for a fresh model)."""
    pbc = cell is not None
    neighbors = build_neighbor_list(positions.numpy(), model.config.cutoff,
                                    None if cell is None else cell.numpy(), pbc)
    edge_index = torch.as_tensor(neighbors.edge_index)
    shifts = None
    if pbc:
        shifts = torch.as_tensor(neighbors.cell_shifts, dtype=positions.dtype) @ cell
    return model.atom_energies(numbers, positions, edge_index, shifts)


def molecule(n_atoms: int = 14, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    atoms = random_molecule(n_atoms, seed=seed, box=5.0)
    return (torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions))


def chignolin() -> tuple[torch.Tensor, torch.Tensor]:
    atoms = load_chignolin().atoms
    return torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions)


@pytest.mark.parametrize("use_group_cg", [True, False])
def test_small_molecule_matches_the_transcription(use_group_cg):
    model = reference_model(use_group_cg=use_group_cg)
    numbers, positions = molecule()
    ours = model_atom_energies(model, numbers, positions)
    theirs = released_atom_energies(model, numbers, positions)
    assert ours.abs().max() > 0.05  # a meaningful comparison
    torch.testing.assert_close(ours, theirs, atol=TOLERANCE, rtol=0)


def test_forces_match_the_transcription():
    model = reference_model()
    numbers, positions = molecule()
    ours = positions.clone().requires_grad_(True)
    theirs = positions.clone().requires_grad_(True)
    edges = _edges(positions, model.config.cutoff)
    (grad_ours,) = torch.autograd.grad(model.atom_energies(numbers, ours, edges).sum(), ours)
    (grad_theirs,) = torch.autograd.grad(
        released_atom_energies(model, numbers, theirs).sum(), theirs)
    torch.testing.assert_close(grad_ours, grad_theirs, atol=1e-10, rtol=0)


def _edges(positions: torch.Tensor, cutoff: float) -> torch.Tensor:
    return torch.as_tensor(build_neighbor_list(positions.numpy(), cutoff).edge_index)


def test_chignolin_matches_the_transcription():
    model = reference_model()
    numbers, positions = chignolin()
    ours = model_atom_energies(model, numbers, positions)
    theirs = released_atom_energies(model, numbers, positions)
    torch.testing.assert_close(ours, theirs, atol=TOLERANCE, rtol=0)


def test_chignolin_in_runs_of_edges_matches_the_transcription():
    """The frozen model's threaded runs (the MD engines' path) compute the same function."""
    model = reference_model().requires_grad_(False)
    model.edge_chunk_size = 256
    numbers, positions = chignolin()
    ours = model_atom_energies(model, numbers, positions)
    assert model.last_plan.in_runs and model.last_plan.kernels == "torch"
    theirs = released_atom_energies(model, numbers, positions)
    torch.testing.assert_close(ours, theirs, atol=TOLERANCE, rtol=0)


def test_batch_matches_the_transcription_molecule_by_molecule():
    model = reference_model()
    (z1, r1), (z2, r2) = molecule(10, seed=1), molecule(13, seed=2)
    r2 = r2 + 50.0  # far apart: separate molecules in one batch
    numbers, positions = torch.cat([z1, z2]), torch.cat([r1, r2])
    batch = torch.cat([torch.zeros(10, dtype=torch.long), torch.ones(13, dtype=torch.long)])
    energies = model.atom_energies(numbers, positions, _edges(positions, model.config.cutoff),
                                   batch=batch)
    theirs = torch.cat([released_atom_energies(model, z1, r1),
                        released_atom_energies(model, z2, r2)])
    torch.testing.assert_close(energies, theirs, atol=TOLERANCE, rtol=0)


def test_periodic_cell_matches_the_transcription():
    model = reference_model()
    numbers, positions = molecule(12, seed=4)
    cell = torch.tensor([[6.5, 0.0, 0.0], [0.4, 6.0, 0.0], [0.0, 0.3, 6.2]],
                        dtype=torch.float64)
    ours = model_atom_energies(model, numbers, positions, cell)
    theirs = released_atom_energies(model, numbers, positions, cell)
    # Periodic images make this differ from the same atoms without a cell.
    alone = released_atom_energies(model, numbers, positions)
    assert (theirs - alone).abs().max() > 1e-3
    torch.testing.assert_close(ours, theirs, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("choice, value", [
    ("self_loops", False), ("vector_message_cutoff", True), ("edge_update", "rejection"),
    ("enhancer", "max"), ("head_norm_epsilon", 1e-2)])
def test_each_choice_changes_the_function(choice, value):
    """Every option of the reference setting matters: changing any one of them (same
    weights where the shapes allow) moves the outputs away from the transcription."""
    numbers, positions = molecule()
    reference = reference_model()
    theirs = released_atom_energies(reference, numbers, positions)
    torch.manual_seed(0)
    changed = FreeCG(FreeCGConfig.reference(**{**SMALL, choice: value})).double()
    state = {name: tensor for name, tensor in reference.state_dict().items()
             if changed.state_dict()[name].shape == tensor.shape}
    changed.load_state_dict(state, strict=False)
    ours = model_atom_energies(changed, numbers, positions)
    # Far above float64 rounding (1e-16); the edge update's form moves these random
    # weights' outputs least (about 1e-6: it reaches only the last layer's edges).
    assert (ours - theirs).abs().max() > 1e-8


def test_reference_setting_is_recorded_and_defaults_are_ours():
    config = FreeCGConfig.reference(hidden=64)
    assert config.is_reference and config.hidden == 64
    assert not FreeCGConfig().is_reference
    assert FreeCG.reference(**SMALL).config == FreeCGConfig.reference(**SMALL)


def test_reference_initial_scales():
    """init="reference" (the default): the authors' bounds for the merged projections and the
    group-CG weights, Xavier with zero bias for the embeddings' maps."""
    torch.manual_seed(0)
    model = FreeCG(FreeCGConfig.reference(hidden=64, num_layers=2, num_heads=4,
                                          num_groups=8))
    xavier_square = math.sqrt(6.0 / (64 + 64))
    layer = model.layers[0]
    for merged in (layer.qks_proj, layer.dkdv_proj):
        for block in merged.weight.split(64):
            assert 0.9 * xavier_square < block.abs().max() <= xavier_square
        assert (merged.bias == 0).all()
    group_bound = math.sqrt(6.0 / ((8 + 1) * 4 * 8 ** 3))
    weight = layer.group_cg.weight
    assert 0.9 * group_bound < weight.abs().max() <= group_bound
    ours = FreeCG(hidden=64, num_layers=2, num_heads=4, num_groups=8, init="xavier")
    assert ours.layers[0].group_cg.weight.abs().max() > 10 * group_bound
    for linear_map in (model.neighbor_embedding.combine, model.edge_embedding.edge_proj):
        assert (linear_map.bias == 0).all()
    assert np.isclose(float(model.edge_embedding.edge_proj.weight.detach().abs().max()),
                      math.sqrt(6.0 / (32 + 64)), rtol=0.1)


@pytest.mark.parametrize("field, value", [("edge_update", "projection"), ("enhancer", "mean"),
                                          ("init", "kaiming"), ("head_norm_epsilon", -1.0)])
def test_an_unknown_choice_is_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        FreeCGConfig(**{field: value})
