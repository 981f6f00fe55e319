"""Reference-data plumbing: the molecule, sampling, labelling, datasets."""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from freecg_md.data import DatasetError, check_elements, load_chignolin, read_dataset
from freecg_md.data.labelling import label_frames


def test_chignolin_is_the_protonated_zwitterion():
    system = load_chignolin()
    assert len(system.atoms) == 166
    assert system.charge == -2 and system.atoms.info["charge"] == -2
    assert system.atoms.get_chemical_formula() == "C62H73N11O20"
    residues = [r.name for r in system.topology.residues]
    assert residues == ["TYR", "TYR", "ASP", "PRO", "GLU", "THR", "GLY", "THR", "TRP", "TYR"]
    # Asp3 and Glu5 carboxylates are deprotonated (charged).
    names = {(a.residue.index, a.name) for a in system.topology.atoms}
    assert (2, "HD2") not in names and (4, "HE2") not in names
    np.testing.assert_allclose(system.native_positions, system.atoms.positions)
    distances = np.linalg.norm(system.atoms.positions[:, None] - system.atoms.positions, axis=-1)
    assert distances[np.triu_indices(166, 1)].min() > 0.9  # Å: no clashes


def test_sampling_tiny_budget_and_resume(tmp_path):
    pytest.importorskip("openmm")
    from freecg_md.data.sampling import SamplingConfig, sample_conformations

    config = SamplingConfig(temperatures=(300.0, 500.0), frames_per_temperature=2,
                            frame_interval_ps=0.02, equilibration_ps=0.02, seed=1)
    out = sample_conformations(config, tmp_path / "frames.npz", progress=False)
    with np.load(out) as data:
        assert data["positions"].shape == (4, 166, 3)
        assert data["temperature"].tolist() == [300.0, 300.0, 500.0, 500.0]
        first = data["positions"].copy()
    assert not np.allclose(first[0], first[1])
    # Resume: finished temperatures are not simulated again (their files are untouched).
    parts = sorted((tmp_path / "frames.parts").iterdir())
    stamps = [p.stat().st_mtime_ns for p in parts]
    sample_conformations(config, tmp_path / "frames.npz", progress=False)
    assert [p.stat().st_mtime_ns for p in parts] == stamps


class ToyCalculator(Calculator):
    """Harmonic pull to the origin; raises on a chosen frame (by x of atom 0)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, fail_x=None, calls=None):
        super().__init__()
        self.fail_x = fail_x
        self.calls = calls if calls is not None else []

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls.append(1)
        if self.fail_x is not None and abs(self.atoms.positions[0, 0] - self.fail_x) < 1e-6:
            raise RuntimeError("SCF did not converge")
        pos = self.atoms.positions
        self.results = {"energy": 0.5 * float((pos**2).sum()), "forces": -pos.copy()}


def toy_frames(tmp_path, n=7):
    rng = np.random.default_rng(0)
    positions = rng.normal(size=(n, 3, 3)).astype(np.float32)
    positions[:, 0, 0] = np.arange(n)  # frame k has x0 = k
    path = tmp_path / "frames.npz"
    np.savez(path, positions=positions, numbers=np.array([8, 1, 1]),
             temperature=np.full(n, 300.0))
    return path


def test_labelling_chunks_resume_and_failures(tmp_path):
    frames = toy_frames(tmp_path)
    calls = []
    written = label_frames(frames, tmp_path / "out", lambda: ToyCalculator(3.0, calls),
                           chunk_size=3, method="toy", progress=False)
    assert [p.name for p in written] == ["chunk_00000.extxyz", "chunk_00001.extxyz",
                                         "chunk_00002.extxyz"]
    data = read_dataset(tmp_path / "out")
    assert [a.info["frame_index"] for a in data] == [0, 1, 2, 4, 5, 6]  # frame 3 failed
    assert "SCF did not converge" in (tmp_path / "out" / "failed_w0.csv").read_text()
    atoms = data[1]
    assert atoms.get_potential_energy() == pytest.approx(0.5 * (atoms.positions**2).sum())
    np.testing.assert_allclose(atoms.get_forces(), -atoms.positions)
    # A killed run: one chunk lost. The rerun labels only that chunk.
    (tmp_path / "out" / "chunk_00001.extxyz").unlink()
    calls.clear()
    rewritten = label_frames(frames, tmp_path / "out", lambda: ToyCalculator(None, calls),
                             chunk_size=3, progress=False)
    assert [p.name for p in rewritten] == ["chunk_00001.extxyz"] and len(calls) == 3


def test_labelling_workers_split_the_chunks(tmp_path):
    frames = toy_frames(tmp_path)
    a = label_frames(frames, tmp_path / "out", ToyCalculator, chunk_size=2, worker=0,
                     n_workers=2, progress=False)
    b = label_frames(frames, tmp_path / "out", ToyCalculator, chunk_size=2, worker=1,
                     n_workers=2, progress=False)
    assert {p.name for p in a} == {"chunk_00000.extxyz", "chunk_00002.extxyz"}
    assert {p.name for p in b} == {"chunk_00001.extxyz", "chunk_00003.extxyz"}
    with pytest.raises(ValueError, match="worker=2"):
        label_frames(frames, tmp_path / "out", ToyCalculator, worker=2, n_workers=2)


def labelled(n=3):
    out = []
    for k in range(n):
        atoms = Atoms("OH2", positions=np.eye(3) + k)
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0 * k, forces=np.ones((3, 3)))
        out.append(atoms)
    return out


def test_dataset_round_trip_is_plain_ase(tmp_path):
    write(tmp_path / "d.extxyz", labelled())
    back = read(tmp_path / "d.extxyz", ":")
    assert back[2].get_potential_energy() == -2.0
    assert len(read_dataset(tmp_path / "d.extxyz")) == 3


@pytest.mark.parametrize("damage, match", [
    ("no_forces", "frame 1: no forces"),
    ("no_energy", "frame 1: no energy"),
    ("nan", "frame 1: non-finite"),
])
def test_malformed_dataset(tmp_path, damage, match):
    structures = labelled()
    bad = structures[1]
    if damage == "no_forces":
        bad.calc = SinglePointCalculator(bad, energy=1.0)
    elif damage == "no_energy":
        bad.calc = SinglePointCalculator(bad, forces=np.zeros((3, 3)))
    else:
        bad.calc = SinglePointCalculator(bad, energy=np.nan, forces=np.zeros((3, 3)))
    write(tmp_path / "bad.extxyz", structures)
    with pytest.raises(DatasetError, match=f"bad.extxyz, {match}"):
        read_dataset(tmp_path / "bad.extxyz")


def test_mismatched_force_shape(tmp_path):
    path = tmp_path / "shape.extxyz"
    write(path, labelled())
    text = path.read_text().splitlines()
    # Drop one atom line from the second frame: the atom count no longer matches.
    text[1 * 5 + 2] = text[1 * 5 + 2].rsplit(" ", 3)[0]
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(DatasetError, match="shape.extxyz"):
        read_dataset(path)


def test_unknown_element_and_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="Fe.*knows H, O"):
        check_elements([Atoms("Fe")], [1, 8])
    with pytest.raises(FileNotFoundError, match="nothing.extxyz"):
        read_dataset(tmp_path / "nothing.extxyz")
