"""Training fixtures: small learnable data sets and configs for tiny models."""

import pytest
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from freecg_md.train import TrainConfig
from tests.conftest import random_molecule

TINY_MODEL = dict(hidden=16, num_layers=2, num_heads=2, num_groups=2, num_basis=8, cutoff=4.0)


def labelled_set(n: int, seed: int = 0) -> list:
    """Small molecules labelled by a Lennard-Jones potential: cheap, smooth, learnable."""
    structures = []
    for k in range(n):
        atoms = random_molecule(6, seed=seed + k, box=3.5, species=(1, 6))
        atoms.calc = LennardJones(sigma=1.0, epsilon=0.05, rc=4.0, smooth=True)
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        structures.append(atoms)
    return structures


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.extxyz"
    write(path, labelled_set(40))
    return path


def config_for(data_file, out, **overrides):
    base = dict(data=[str(data_file)], output_dir=str(out), model=TINY_MODEL, batch_size=4,
                lr=3e-3, warmup_steps=5, max_epochs=2, ema_decay=0.9, seed=3,
                energy_weight=0.1, force_weight=0.9)
    return TrainConfig(**{**base, **overrides})
