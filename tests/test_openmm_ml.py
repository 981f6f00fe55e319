"""FreeCG inside OpenMM through openmm-ml: the entry point, units, periodic boxes, errors."""

import numpy as np
import pytest
import torch

openmm = pytest.importorskip("openmm")
openmmml = pytest.importorskip("openmmml")
from openmm import app, unit  # noqa: E402

from freecg_md import FreeCGCalculator, load_model, save_model  # noqa: E402
from freecg_md.nn.precision import cpu_has_bfloat16  # noqa: E402
from freecg_md.openmm_ml import EV_TO_KJ_PER_MOL, constrain_hydrogen_bonds  # noqa: E402
from tests.conftest import random_molecule, small_model  # noqa: E402


def topology_of(numbers, box=None):
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for index, z in enumerate(numbers):
        topology.addAtom(f"X{index}", app.Element.getByAtomicNumber(int(z)), residue)
    if box is not None:
        topology.setPeriodicBoxVectors(np.eye(3) * box * unit.angstrom)
    return topology


def openmm_results(system, positions_A, box_A=None):
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    if box_A is not None:
        context.setPeriodicBoxVectors(*(np.eye(3) * box_A * 0.1))
    context.setPositions(positions_A * 0.1)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energy, forces


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.pt"
    save_model(small_model(torch.float64), path)
    return path


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-9), ("float32", 1e-5)])
def test_openmm_energies_and_forces_equal_the_calculators(model_file, dtype, rtol):
    atoms = random_molecule(10, seed=3)
    system = openmmml.MLPotential("freecg", modelPath=str(model_file)).createSystem(
        topology_of(atoms.numbers), dtype=dtype)
    energy, forces = openmm_results(system, atoms.positions)
    atoms.calc = FreeCGCalculator(model_file, dtype=dtype)
    expected_energy = atoms.get_potential_energy() * EV_TO_KJ_PER_MOL
    expected_forces = atoms.get_forces() * EV_TO_KJ_PER_MOL * 10.0  # kJ/mol/nm
    assert energy == pytest.approx(expected_energy, rel=rtol, abs=1e-6)
    np.testing.assert_allclose(forces, expected_forces, rtol=rtol,
                               atol=rtol * np.abs(expected_forces).max())


@pytest.mark.skipif(not cpu_has_bfloat16(), reason="this CPU has no bfloat16 units")
def test_the_bfloat16_mode_reaches_openmm_as_it_reaches_the_calculator(model_file):
    atoms = random_molecule(10, seed=3)
    system = openmmml.MLPotential("freecg", modelPath=str(model_file)).createSystem(
        topology_of(atoms.numbers), matmul_precision="bfloat16")
    _, forces = openmm_results(system, atoms.positions)
    atoms.calc = FreeCGCalculator(model_file, matmul_precision="bfloat16")
    reduced = atoms.get_forces() * EV_TO_KJ_PER_MOL * 10.0  # kJ/mol/nm
    atoms.calc = FreeCGCalculator(model_file)
    float32 = atoms.get_forces() * EV_TO_KJ_PER_MOL * 10.0
    np.testing.assert_allclose(forces, reduced, rtol=1e-5, atol=1e-5 * np.abs(reduced).max())
    assert np.abs(forces - float32).max() > 0  # the mode is on
    with pytest.raises(ValueError, match="need dtype='float32'"):
        openmmml.MLPotential("freecg", modelPath=str(model_file)).createSystem(
            topology_of(atoms.numbers), dtype="float64", matmul_precision="bfloat16")


def test_a_periodic_box_matches_the_calculator_with_its_cell(model_file):
    box = 6.0
    atoms = random_molecule(12, seed=5, box=box)
    system = openmmml.MLPotential("freecg", modelPath=str(model_file)).createSystem(
        topology_of(atoms.numbers, box=box), dtype="float64")
    assert system.usesPeriodicBoundaryConditions()
    energy, forces = openmm_results(system, atoms.positions, box_A=box)
    atoms.set_cell(np.eye(3) * box)
    atoms.pbc = True
    atoms.calc = FreeCGCalculator(model_file, dtype="float64")
    assert energy == pytest.approx(atoms.get_potential_energy() * EV_TO_KJ_PER_MOL, rel=1e-9)
    np.testing.assert_allclose(forces, atoms.get_forces() * EV_TO_KJ_PER_MOL * 10.0,
                               rtol=1e-9, atol=1e-8)
    # Images matter here: the same atoms without the box give another energy.
    free, _ = openmm_results(openmmml.MLPotential("freecg", modelPath=str(model_file))
                             .createSystem(topology_of(atoms.numbers), dtype="float64"),
                             atoms.positions)
    assert abs(free - energy) > 1e-6


def test_a_short_langevin_run_stays_finite(model_file):
    atoms = random_molecule(8, seed=7)
    system = openmmml.MLPotential("freecg", modelPath=str(model_file)).createSystem(
        topology_of(atoms.numbers))
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                                 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(atoms.positions * 0.1)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 2)
    integrator.step(20)
    state = context.getState(getEnergy=True, getPositions=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert np.all(np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)))


def test_an_unchanged_state_is_not_evaluated_again(model_file, monkeypatch):
    """getState(getEnergy=True) after a step asks for the same positions again: the model
    runs once for them; a move, or a new box, runs it again."""
    from freecg_md.md import FreeCGPotential

    calls = []
    evaluate = FreeCGPotential.evaluate

    def counted(self, positions):
        calls.append(positions.clone())
        return evaluate(self, positions)

    monkeypatch.setattr(FreeCGPotential, "evaluate", counted)
    box = 6.0
    atoms = random_molecule(12, seed=5, box=box)
    system = openmmml.MLPotential("freecg", modelPath=str(model_file)).createSystem(
        topology_of(atoms.numbers, box=box), dtype="float64")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(atoms.positions * 0.1)
    first = context.getState(getEnergy=True, getForces=True)
    again = context.getState(getEnergy=True, getForces=True)
    assert len(calls) == 1
    assert again.getPotentialEnergy() == first.getPotentialEnergy()
    moved = atoms.positions.copy()
    moved[0] += 0.01
    context.setPositions(moved * 0.1)
    context.getState(getEnergy=True)
    assert len(calls) == 2
    context.setPeriodicBoxVectors(*(np.eye(3) * 0.61))
    stretched = context.getState(getEnergy=True)
    assert len(calls) == 3
    assert stretched.getPotentialEnergy() != first.getPotentialEnergy()


def test_hydrogen_bonds_become_rigid_and_hydrogens_heavier_at_equal_total_mass():
    # Methanol-like: C bonded to O and three H, O bonded to one H; an H-H "bond" is left.
    topology = topology_of([6, 8, 1, 1, 1, 1, 1, 1])
    atoms = list(topology.atoms())
    for a, b in [(0, 1), (0, 2), (0, 3), (0, 4), (1, 5), (6, 7)]:
        topology.addBond(atoms[a], atoms[b])
    positions = np.random.default_rng(3).normal(scale=0.1, size=(8, 3))

    def system_of():
        system = openmm.System()
        for atom in atoms:
            system.addParticle(atom.element.mass)
        return system

    masses = lambda system: np.array([system.getParticleMass(i).value_in_unit(unit.dalton)  # noqa: E731
                                      for i in range(system.getNumParticles())])
    rigid = system_of()
    assert constrain_hydrogen_bonds(rigid, topology, positions) == 4  # not C-O, not H-H
    assert np.allclose(masses(rigid), masses(system_of()))
    lengths = {tuple(rigid.getConstraintParameters(k)[:2]):
               rigid.getConstraintParameters(k)[2].value_in_unit(unit.nanometer)
               for k in range(rigid.getNumConstraints())}
    assert np.isclose(lengths[(1, 5)], np.linalg.norm(positions[1] - positions[5]))
    heavy = system_of()
    constrain_hydrogen_bonds(heavy, topology, positions, hydrogen_mass=3.024)
    m = masses(heavy)
    assert np.allclose(m[2:6], 3.024) and np.isclose(m.sum(), masses(system_of()).sum())
    assert np.isclose(m[0], 12.011 - 3 * (3.024 - 1.008), atol=1e-3)
    with pytest.raises(ValueError, match="no mass"):
        constrain_hydrogen_bonds(system_of(), topology, positions, hydrogen_mass=10.0)


def test_an_unknown_element_or_a_missing_model_is_refused_at_create_system(model_file):
    with pytest.raises(ValueError, match="element.*Cl.*not trained on"):
        openmmml.MLPotential("freecg", modelPath=str(model_file)).createSystem(
            topology_of([6, 17, 1]))
    with pytest.raises(ValueError, match="needs modelPath"):
        openmmml.MLPotential("freecg")


def test_a_mixed_system_computes_the_ml_atoms_with_freecg(model_file):
    # Two molecules of a toy force field; FreeCG takes over the first.
    atoms = random_molecule(10, seed=11, box=8.0)
    topology = topology_of(atoms.numbers)
    mm = openmm.System()
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    for _ in atoms.numbers:
        mm.addParticle(12.0)
        nonbonded.addParticle(0.0, 0.3, 0.1)
    mm.addForce(nonbonded)
    ml_atoms = list(range(5))
    mixed = openmmml.MLPotential("freecg", modelPath=str(model_file)).createMixedSystem(
        topology, mm, ml_atoms, dtype="float64")
    energy, _ = openmm_results(mixed, atoms.positions)
    # FreeCG on the ML atoms alone, plus the MM energy without the ML atoms' mutual terms.
    part = atoms[ml_atoms]
    part.calc = FreeCGCalculator(model_file, dtype="float64")
    ml_energy = part.get_potential_energy() * EV_TO_KJ_PER_MOL
    for i in ml_atoms:
        for j in ml_atoms:
            if i < j:
                nonbonded.addException(i, j, 0.0, 0.3, 0.0)
    mm_energy, _ = openmm_results(mm, atoms.positions)
    assert energy == pytest.approx(ml_energy + mm_energy, rel=1e-9)


def test_a_system_is_copied_serialised_and_interpolated_with_its_freecg_force(model_file,
                                                                            tmp_path,
                                                                            monkeypatch):
    """OpenMM copies a PythonForce by pickling its function: a deep copy, an XML round trip
    and openmm-ml's interpolating mixed system all compute what the original does; a model
    file changed since is refused by name."""
    import copy

    atoms = random_molecule(10, seed=11, box=8.0)
    topology = topology_of(atoms.numbers)
    potential = openmmml.MLPotential("freecg", modelPath=str(model_file))
    system = potential.createSystem(topology, dtype="float64")
    energy, forces = openmm_results(system, atoms.positions)
    for other in (copy.deepcopy(system),
                  openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))):
        again, again_forces = openmm_results(other, atoms.positions)
        assert again == energy
        np.testing.assert_array_equal(again_forces, forces)
    # A model path relative to the working directory, read back from another one.
    monkeypatch.chdir(model_file.parent)
    relative = openmmml.MLPotential("freecg", modelPath=model_file.name).createSystem(
        topology, dtype="float64")
    monkeypatch.chdir(tmp_path.parent)
    moved = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(relative))
    assert openmm_results(moved, atoms.positions)[0] == energy
    # A model object rather than a file is copied whole.
    held = openmmml.MLPotential("freecg", modelPath=load_model(model_file)).createSystem(
        topology, dtype="float64")
    assert openmm_results(copy.deepcopy(held), atoms.positions)[0] == energy
    # interpolate=True deep-copies the force; at lambda 1 the ML atoms are FreeCG's alone.
    mm = openmm.System()
    nonbonded = openmm.NonbondedForce()
    for _ in atoms.numbers:
        mm.addParticle(12.0)
        nonbonded.addParticle(0.0, 0.3, 0.1)
    mm.addForce(nonbonded)
    plain = potential.createMixedSystem(topology, mm, list(range(5)), dtype="float64")
    mixed = potential.createMixedSystem(topology, mm, list(range(5)), interpolate=True,
                                        dtype="float64")
    assert openmm_results(mixed, atoms.positions)[0] == pytest.approx(
        openmm_results(plain, atoms.positions)[0], rel=1e-9)
    saved = openmm.XmlSerializer.serialize(system)
    changed = load_model(model_file)
    with torch.no_grad():
        next(changed.parameters()).add_(0.01)
    save_model(changed, model_file)
    with pytest.raises(Exception, match="has changed since this System was saved"):
        openmm_results(openmm.XmlSerializer.deserialize(saved), atoms.positions)
    model_file.unlink()
    with pytest.raises(Exception, match="needs the model file .*model.pt, which is missing"):
        openmm_results(openmm.XmlSerializer.deserialize(saved), atoms.positions)
