"""GBn2 in torch (freecg_md.gbn2) against OpenMM's own CustomGBForce: the same energy and
forces to float64 rounding, in a Context through PythonForce, and refused for other forces."""

import numpy as np
import pytest

openmm = pytest.importorskip("openmm")

import torch  # noqa: E402
from openmm import unit  # noqa: E402

from freecg_md.data.sampling import amber_gbn2_system  # noqa: E402
from freecg_md.gbn2 import (  # noqa: E402
    GBn2Parameters,
    TorchGBn2,
    gbn2_energy,
    with_torch_gbn2,
)


@pytest.fixture(scope="module")
def chignolin():
    pdb, system = amber_gbn2_system(True, 3.024)
    positions = np.asarray(pdb.positions.value_in_unit(unit.nanometer))
    rng = np.random.default_rng(0)
    # The native structure, then two distorted ones (close contacts, other Born radii).
    frames = [positions] + [positions + rng.normal(0.0, s, positions.shape) for s in (0.02, 0.05)]
    return system, frames


def reference(system, frames, only_gb=False):
    """(energies kJ/mol, forces kJ/mol/nm) from OpenMM's Reference platform (float64)."""
    if only_gb:
        gb = [f for f in system.getForces() if isinstance(f, openmm.CustomGBForce)][0]
        alone = openmm.System()
        for i in range(system.getNumParticles()):
            alone.addParticle(system.getParticleMass(i))
        alone.addForce(openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(gb)))
        system = alone
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    energies, forces = [], []
    for frame in frames:
        context.setPositions(frame)
        state = context.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        forces.append(state.getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer))
    return np.array(energies), np.array(forces)


def test_the_reference_equals_openmm_gbn2(chignolin):
    system, frames = chignolin
    gb = [f for f in system.getForces() if isinstance(f, openmm.CustomGBForce)][0]
    parameters = GBn2Parameters.from_force(gb)
    assert parameters.n_atoms == 166 and parameters.solvent_dielectric == 78.5
    energies, forces = reference(system, frames, only_gb=True)
    for frame, energy, force in zip(frames, energies, forces, strict=True):
        x = torch.tensor(frame, requires_grad=True)
        ours = gbn2_energy(x, parameters)
        (gradient,) = torch.autograd.grad(ours, x)
        assert float(ours.detach()) == pytest.approx(energy, rel=1e-11)
        np.testing.assert_allclose(-gradient.numpy(), force, rtol=0, atol=1e-8)
        # A sum with forces of hundreds of kJ/mol/nm: a wrong term shows far above this.
        assert np.abs(force).max() > 100


# A failed compilation falls back to eager with a RuntimeWarning: here it fails the test.
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("compile", [False, True])
def test_a_system_with_torch_gbn2_runs_the_same_physics(chignolin, compile):
    system, frames = chignolin
    swapped = with_torch_gbn2(system, compile=compile)
    assert not any(isinstance(f, openmm.CustomGBForce) for f in swapped.getForces())
    assert any(isinstance(f, openmm.PythonForce) for f in swapped.getForces())
    energies, forces = reference(system, frames)
    ours_e, ours_f = reference(swapped, frames)
    np.testing.assert_allclose(ours_e, energies, rtol=1e-11, atol=0)
    np.testing.assert_allclose(ours_f, forces, rtol=0, atol=1e-8)
    # The original System is left as it was.
    assert sum(isinstance(f, openmm.CustomGBForce) for f in system.getForces()) == 1


def test_a_short_run_with_torch_gbn2_stays_with_openmm(chignolin):
    # Same seed, same start: the trajectories agree while float64 rounding differences
    # are still small.
    system, frames = chignolin
    positions = []
    for candidate in (system, with_torch_gbn2(system, compile=False)):
        integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                                     2 * unit.femtosecond)
        integrator.setRandomNumberSeed(11)
        context = openmm.Context(candidate, integrator,
                                 openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(frames[0])
        context.setVelocitiesToTemperature(300 * unit.kelvin, 5)
        integrator.step(20)
        positions.append(context.getState(getPositions=True).getPositions(asNumpy=True)
                         .value_in_unit(unit.nanometer))
    np.testing.assert_allclose(positions[0], positions[1], rtol=0, atol=1e-8)


def test_other_forces_are_refused(chignolin):
    system, _ = chignolin
    gb = [f for f in system.getForces() if isinstance(f, openmm.CustomGBForce)][0]
    changed = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(gb))
    expression, kind = changed.getEnergyTermParameters(1)
    changed.setEnergyTermParameters(1, expression.replace("28.3919551", "20.0"), kind)
    with pytest.raises(ValueError, match="not OpenMM's GBn2 with the ACE surface term"):
        GBn2Parameters.from_force(changed)
    with pytest.raises(ValueError, match="expected the CustomGBForce"):
        GBn2Parameters.from_force(openmm.NonbondedForce())
    bare = openmm.System()
    bare.addParticle(1.0)
    with pytest.raises(ValueError, match="system has 0 CustomGBForce"):
        with_torch_gbn2(bare)
    with pytest.raises(ValueError, match=r"positions has shape \(3, 3\); expected \(166, 3\)"):
        TorchGBn2(GBn2Parameters.from_force(gb)).energy_and_forces(np.zeros((3, 3)))
