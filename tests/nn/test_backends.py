"""The physics tests over every execution path of the model available here.

The model's mathematics is one (the trainable model's torch operations, differentiated by
autograd); the paths beside it are accelerations that must give the same function:

- ``reference``: trainable, whole passes, torch operations;
- ``frozen``: no parameter needs a gradient, torch operations (``fused_kernels = False``);
- ``fused``: frozen, the fused CPU kernels (where they build);
- ``runs``: frozen, edges in runs shared among two threads, the fused kernels;
- ``runs-torch``: the same runs with torch operations;
- ``cuda``: the frozen model on a GPU, where there is one.

Each is checked for what a force field must satisfy (energy invariant and forces
equivariant under rotations and reflections, forces the negative gradient of the energy,
a batch equal to its molecules one by one, a continuous energy as an atom crosses the
cutoff) and for equality with ``reference``, in float32 and float64, for our default
choices and for the other settings of the model's config (the authors' settings,
``FreeCGConfig.reference``, and the max enhancer), which the plan runs on torch
operations wherever the fused kernels do not compute them.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from e3nn import o3

from freecg_md.nn.cpu.kernels import kernels_available
from freecg_md.nn.model import REFERENCE_CHOICES
from tests.conftest import full_edges, random_molecule, small_model

BACKENDS = ["reference", "frozen", "fused", "runs", "runs-torch", "cuda"]
SETTINGS = {"ours": {}, "authors": {**REFERENCE_CHOICES, "init": "xavier"},
            "max-enhancer": {"enhancer": "max"}}
TOLERANCE = {torch.float32: dict(energy=3e-5, forces=3e-4),
             torch.float64: dict(energy=1e-10, forces=1e-9)}


class Backend:
    """A model on one execution path, called like ``FreeCG.energy_and_forces``."""

    def __init__(self, name: str, dtype: torch.dtype, setting: str = "ours"):
        if name in ("fused", "runs") and not kernels_available():
            pytest.skip("the fused CPU kernels do not build here")
        if name == "cuda" and not torch.cuda.is_available():
            pytest.skip("no CUDA GPU")
        model = small_model(dtype, **SETTINGS[setting])
        if name != "reference":
            model.requires_grad_(False)
        if name in ("frozen", "runs-torch"):
            model.fused_kernels = False
        if name in ("runs", "runs-torch"):
            model.edge_chunk_size = 20  # small enough for several runs on these molecules
        self.threads = 2 if name in ("runs", "runs-torch") else None
        self.device = torch.device("cuda" if name == "cuda" else "cpu")
        self.model = model.to(self.device)
        self.dtype = dtype

    def __call__(self, numbers, positions, edge_index, batch=None, num_graphs=None):
        saved = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            out = self.model.energy_and_forces(
                torch.as_tensor(numbers, device=self.device),
                torch.as_tensor(positions, dtype=self.dtype, device=self.device),
                edge_index.to(self.device),
                **({} if batch is None else {"batch": batch.to(self.device),
                                             "num_graphs": num_graphs}))
        finally:
            torch.set_num_threads(saved)
        return (out["energy"].detach().double().cpu().numpy(),
                out["forces"].detach().double().cpu().numpy())


def molecule_call(backend: Backend, atoms, positions=None):
    energy, forces = backend(atoms.numbers, atoms.positions if positions is None else positions,
                             full_edges(len(atoms)))
    return float(energy.sum()), forces


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture(params=list(SETTINGS))
def setting(request):
    return request.param


@pytest.mark.parametrize("name", BACKENDS)
def test_equals_the_reference(name, dtype, setting):
    atoms = random_molecule(16, seed=3)
    energy, forces = molecule_call(Backend(name, dtype, setting), atoms)
    reference_energy, reference_forces = molecule_call(Backend("reference", dtype, setting),
                                                       atoms)
    tolerance = TOLERANCE[dtype]
    assert abs(energy - reference_energy) < tolerance["energy"] * len(atoms)
    np.testing.assert_allclose(forces, reference_forces, rtol=0, atol=tolerance["forces"])
    assert np.abs(reference_forces).max() > 1e-3


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("parity", [1, -1], ids=["rotation", "rotoreflection"])
def test_energy_invariant_and_forces_equivariant(name, parity, dtype, setting):
    backend = Backend(name, dtype, setting)
    atoms = random_molecule(14, seed=4)
    energy, forces = molecule_call(backend, atoms)
    tolerance = TOLERANCE[dtype]
    for trial in range(2):
        rotation = (o3.rand_matrix(dtype=torch.float64) * parity).numpy()
        moved = atoms.positions @ rotation.T + np.random.default_rng(trial).normal(size=3) * 5
        energy2, forces2 = molecule_call(backend, atoms, moved)
        assert abs(energy2 - energy) < tolerance["energy"] * max(1.0, abs(energy)) * len(atoms)
        np.testing.assert_allclose(forces2, forces @ rotation.T, atol=tolerance["forces"])


@pytest.mark.parametrize("name", BACKENDS)
def test_forces_are_the_negative_gradient(name, setting):
    backend = Backend(name, torch.float64, setting)
    atoms = random_molecule(10, seed=7)
    _, forces = molecule_call(backend, atoms)
    rng = np.random.default_rng(0)
    step = 1e-5
    for atom, axis in zip(rng.integers(0, len(atoms), 4), rng.integers(0, 3, 4), strict=True):
        plus, minus = atoms.positions.copy(), atoms.positions.copy()
        plus[atom, axis] += step
        minus[atom, axis] -= step
        derivative = (molecule_call(backend, atoms, plus)[0]
                      - molecule_call(backend, atoms, minus)[0]) / (2 * step)
        assert forces[atom, axis] == pytest.approx(-derivative, abs=1e-6, rel=1e-6)


@pytest.mark.parametrize("name", BACKENDS)
def test_a_batch_equals_its_molecules_one_by_one(name, dtype, setting):
    backend = Backend(name, dtype, setting)
    molecules = [random_molecule(n, seed=10 + n) for n in (9, 12, 7)]
    numbers = np.concatenate([m.numbers for m in molecules])
    positions = np.concatenate([m.positions for m in molecules])
    offsets = np.cumsum([0] + [len(m) for m in molecules])
    edges = torch.cat([full_edges(len(m)) + int(o) for m, o in zip(molecules, offsets,
                                                                    strict=False)], dim=1)
    batch = torch.cat([torch.full((len(m),), k) for k, m in enumerate(molecules)])
    energies, forces = backend(numbers, positions, edges, batch=batch, num_graphs=3)
    tolerance = TOLERANCE[dtype]
    for k, molecule in enumerate(molecules):
        energy, single_forces = molecule_call(backend, molecule)
        assert abs(energies[k] - energy) < tolerance["energy"] * len(molecule)
        np.testing.assert_allclose(forces[offsets[k]:offsets[k + 1]], single_forces, rtol=0,
                                   atol=tolerance["forces"])


@pytest.mark.parametrize("name", BACKENDS)
def test_energy_is_continuous_as_an_atom_crosses_the_cutoff(name, setting):
    backend = Backend(name, torch.float64, setting)
    with torch.no_grad():  # trained gates have biases; fresh ones are zero
        for layer in backend.model.layers:
            layer.gate_proj.bias.copy_(torch.linspace(-0.5, 0.5, layer.gate_proj.bias.numel()))
    jump = _cutoff_jump(backend)
    if SETTINGS[setting].get("vector_message_cutoff", True):
        assert jump < 1e-7
    else:  # the authors' vector message has no cutoff: the gates' biases make a step
        assert jump > 1e-5


def _cutoff_jump(backend: Backend) -> float:
    """|E(r_c + 1e-6) - E(r_c - 1e-6)| for an atom moved across a neighbour's cutoff."""
    cutoff = backend.model.cutoff
    atoms = random_molecule(8, seed=2, box=3.0)
    # One more atom on a line out of the molecule, across the cutoff of its nearest atom.
    nearest = atoms.positions[np.argmax(atoms.positions[:, 0])]
    energies = []
    for distance in (cutoff - 1e-6, cutoff + 1e-6):
        probe = copy.deepcopy(atoms)
        probe.append("H")
        probe.positions[-1] = nearest + np.array([distance, 0.0, 0.0])
        energies.append(molecule_call(backend, probe)[0])
    return abs(energies[1] - energies[0])
