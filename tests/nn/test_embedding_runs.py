"""The embeddings run by run in the pool (EmbeddingInRuns) equal the whole-pass modules."""

import pytest
import torch

from freecg_md.nn.chunks import edge_chunks, split_runs
from freecg_md.nn.cpu.embedding_runs import embed_in_runs
from freecg_md.nn.cpu.threads import SerialPool, ThreadRunPool
from tests.conftest import small_model


def _runs(n_atoms: int = 9, max_edges: int = 12, seed: int = 0):
    """Edges sorted by centre (an atom without edges, neighbours repeated) cut into runs,
    with distances (leaf) in float64."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.sort(torch.randint(0, n_atoms - 1, (40,), generator=generator)).values
    neighbors = torch.randint(0, n_atoms, (40,), generator=generator)
    distances = (0.8 + 4 * torch.rand(40, dtype=torch.float64, generator=generator))
    return centers, neighbors, distances.requires_grad_(), edge_chunks(centers, n_atoms,
                                                                         max_edges)


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "recomputed"])
@pytest.mark.parametrize("pool", [SerialPool(), ThreadRunPool(2)], ids=["serial", "threads"])
def test_embedding_in_runs_equals_the_whole_pass(pool, keep):
    model = small_model(torch.float64).requires_grad_(False)
    with torch.no_grad():  # biases start at zero: make them count
        for module in (model.neighbor_embedding, model.edge_embedding):
            for parameter in module.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
    centers, neighbors, distances, chunks = _runs()
    assert len(chunks) > 2
    species = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 1])
    phi = model.cutoff_fn(distances)
    rbf = model.rbf(distances)
    x_whole = model.neighbor_embedding(species, centers, neighbors, rbf, phi)
    f_whole = model.edge_embedding(x_whole, centers, neighbors, rbf)

    runs = split_runs(chunks, centers, neighbors, distances, torch.zeros(40, 8), phi)
    x, f = embed_in_runs(model.neighbor_embedding, model.edge_embedding, model.rbf, species,
                         runs, pool, keep)
    torch.testing.assert_close(x, x_whole, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(torch.cat(f), f_whole, rtol=1e-13, atol=1e-13)

    # Gradients reach the distances through both the basis and phi, from x and from f.
    generator = torch.Generator().manual_seed(3)
    weight_x = torch.randn(x.shape, dtype=x.dtype, generator=generator)
    weight_f = torch.randn(f_whole.shape, dtype=x.dtype, generator=generator)
    (expected,) = torch.autograd.grad((x_whole * weight_x).sum() + (f_whole * weight_f).sum(),
                                      distances, retain_graph=True)  # rbf, phi: shared
    (got,) = torch.autograd.grad((x * weight_x).sum() + (torch.cat(f) * weight_f).sum(),
                                 distances)
    assert expected.abs().max() > 0
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
