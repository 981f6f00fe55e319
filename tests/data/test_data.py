"""Reference-data pipeline: the chignolin structure, sampling, labelling and datasets.

The labelling tests use a toy calculator so that they check the bookkeeping (chunks, resume,
failure log) in milliseconds; one test labels a real frame with GFN2-xTB when tblite is there.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from freecg_md.data import (
    CHIGNOLIN_CHARGE,
    DatasetError,
    check_elements,
    load_chignolin,
    merge_chunks,
    read_dataset,
    write_dataset,
)
from freecg_md.data.labelling import label_frames, reference_method

# A coordinate this large marks a frame on which the toy calculator should misbehave.
FAIL_RAISE, FAIL_NAN, FAIL_WARN = 1000.0, 2000.0, 3000.0


class ToyCalculator(Calculator):
    """Harmonic well around the origin, E = k/2 sum |r|^2 (eV, Å), with scripted failures."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, calls: list[int], k: float = 0.1) -> None:
        super().__init__()
        self.calls = calls
        self.k = k

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls.append(1)
        r = self.atoms.positions
        marker = r[0, 0]
        if marker == FAIL_RAISE:
            raise RuntimeError("SCF did not converge in 250 iterations")
        if marker == FAIL_WARN:
            warnings.warn("SCF not converged, results may be wrong", RuntimeWarning,
                          stacklevel=1)
        energy = np.nan if marker == FAIL_NAN else 0.5 * self.k * float((r**2).sum())
        self.results = {"energy": energy, "forces": -self.k * r}


def _frames_npz(path: Path, n_frames: int = 7, n_atoms: int = 5,
                markers: dict[int, float] | None = None) -> Path:
    rng = np.random.default_rng(0)
    positions = rng.normal(size=(n_frames, n_atoms, 3)).astype(np.float32)
    for frame, value in (markers or {}).items():
        positions[frame, 0, 0] = value
    np.savez(path, positions=positions, numbers=np.array([6, 1, 1, 8, 7][:n_atoms]),
             temperature=np.linspace(300.0, 600.0, n_frames),
             time_ps=np.arange(n_frames, dtype=float))
    return path


def _labelled(n: int = 3, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    structures = []
    for _ in range(n):
        atoms = Atoms("CH4", positions=rng.normal(size=(5, 3)))
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()),
                                           forces=rng.normal(size=(5, 3)))
        structures.append(atoms)
    return structures


# --- the molecule -------------------------------------------------------------------------


def test_load_chignolin():
    system = load_chignolin()
    assert len(system.atoms) == 166
    assert system.charge == CHIGNOLIN_CHARGE == -2
    assert system.atoms.info["charge"] == -2
    assert "".join(r.code for r in system.topology.residues) == "YYDPETGTWY"
    assert system.topology.n_atoms == 166
    assert system.native_positions.shape == (166, 3)
    assert system.native_positions.dtype == np.float64
    np.testing.assert_allclose(system.atoms.positions, system.native_positions)
    assert system.pdb_path.is_file()
    # Charged termini and deprotonated Asp3 / Glu5 (net -2): no carboxyl hydrogens.
    names = {(a.residue.index, a.name) for a in system.topology.atoms}
    assert {(0, "H2"), (0, "H3"), (9, "OXT")} <= names
    assert (2, "HD2") not in names and (4, "HE2") not in names
    # Positions in Å: the C-alpha trace of a 10-residue hairpin spans ~10-20 Å, not 1-2.
    ca = system.native_positions[system.topology.select("name CA")]
    assert 8.0 < np.ptp(ca, axis=0).max() < 25.0


# --- sampling -----------------------------------------------------------------------------


def test_sampling_tiny_and_resumable(tmp_path, monkeypatch):
    pytest.importorskip("openmm")
    from freecg_md.data import sampling

    config = sampling.SamplingConfig(temperatures=(300.0, 450.0), frames_per_temperature=2,
                                     frame_interval_ps=0.02, equilibration_ps=0.0,
                                     timestep_fs=2.0, seed=7)
    out = tmp_path / "frames.npz"
    # Worker 0 of 2 does only the first temperature and cannot assemble the file yet.
    assert sampling.sample_conformations(config, out, progress=False, worker=0,
                                         n_workers=2) is None
    assert not out.exists()
    assert len(list(out.with_suffix(".parts").glob("*.npz"))) == 1

    assert sampling.sample_conformations(config, out, progress=False) == out
    with np.load(out) as data:
        assert data["positions"].shape == (4, 166, 3)
        assert data["positions"].dtype == np.float32
        np.testing.assert_array_equal(data["temperature"], [300.0, 300.0, 450.0, 450.0])
        np.testing.assert_allclose(data["time_ps"], [0.02, 0.04, 0.02, 0.04])
        np.testing.assert_array_equal(data["numbers"], load_chignolin().atoms.numbers)
        assert json.loads(str(data["config"]))["seed"] == 7
        # 20 fs of MD from the minimised native structure: still close to it, in Å.
        displacement = data["positions"][0] - load_chignolin().native_positions
        assert 0.0 < np.abs(displacement).max() < 1.5
        first = data["positions"].copy()

    # Resume: with every temperature saved, nothing is simulated again.
    def no_md(*args, **kwargs):
        raise AssertionError("a saved temperature was simulated again")

    monkeypatch.setattr(sampling, "_sample_one", no_md)
    out.unlink()
    assert sampling.sample_conformations(config, out, progress=False) == out
    with np.load(out) as data:
        np.testing.assert_array_equal(data["positions"], first)

    # Parts from another frame budget are refused, not silently mixed in.
    bigger = sampling.SamplingConfig(**{**json.loads(config.to_json()),
                                        "temperatures": (300.0, 450.0),
                                        "frames_per_temperature": 3})
    with pytest.raises(ValueError, match="frames_per_temperature=3"):
        sampling.sample_conformations(bigger, out, progress=False)
    # So are parts sampled with other physics under the same temperature and seed.
    constrained = sampling.SamplingConfig(**{**json.loads(config.to_json()),
                                             "temperatures": (300.0, 450.0),
                                             "constrain_hydrogen_bonds": True})
    with pytest.raises(ValueError, match="was sampled with"):
        sampling.sample_conformations(constrained, out, progress=False)


def test_sampling_config_rejects_bad_values():
    from freecg_md.data.sampling import SamplingConfig

    with pytest.raises(ValueError, match="frame_interval_ps=0"):
        SamplingConfig(frame_interval_ps=0)
    with pytest.raises(ValueError, match="temperatures"):
        SamplingConfig(temperatures=(300.0, -5.0))
    with pytest.raises(ValueError, match="timestep_fs=4.0 without constrain_hydrogen_bonds"):
        SamplingConfig(timestep_fs=4.0)
    with pytest.raises(ValueError, match="hydrogen_mass_amu"):
        SamplingConfig(hydrogen_mass_amu=0.0)


def test_default_sampling_stretches_bonds_to_hydrogen(tmp_path):
    """Training frames must hold thermal X-H stretches; constrained MD has none."""
    pytest.importorskip("openmm")
    from freecg_md.data.sampling import SamplingConfig, sample_conformations

    system = load_chignolin()
    pairs = np.array([(a.index, b.index) for a, b in system.topology.bonds
                      if "H" in (a.element.symbol, b.element.symbol)])
    spreads = {}
    for constrained in (False, True):
        config = SamplingConfig(
            temperatures=(300.0,), frames_per_temperature=3, frame_interval_ps=0.01,
            equilibration_ps=0.02, timestep_fs=2.0 if constrained else 1.0,
            constrain_hydrogen_bonds=constrained, seed=11)
        out = sample_conformations(config, tmp_path / f"c{constrained}.npz", progress=False)
        with np.load(out) as data:
            positions = data["positions"].astype(np.float64)
        lengths = np.linalg.norm(positions[:, pairs[:, 0]] - positions[:, pairs[:, 1]], axis=-1)
        # The spread of each bond's length over the frames, in Å.
        spreads[constrained] = np.ptp(lengths, axis=0).max()
    assert spreads[True] < 2e-3, spreads
    assert spreads[False] > 2e-2, spreads


# --- labelling ----------------------------------------------------------------------------


def test_labelling_chunks_resume_and_failures(tmp_path):
    frames = _frames_npz(tmp_path / "frames.npz", n_frames=7, markers={4: FAIL_RAISE})
    out = tmp_path / "labelled"
    calls: list[int] = []
    factories: list[int] = []

    def factory() -> Calculator:
        factories.append(1)
        return ToyCalculator(calls)

    written = label_frames(frames, out, factory, chunk_size=3, progress=False)
    assert [p.name for p in written] == [f"chunk_{i:05d}.extxyz.gz" for i in range(3)]
    assert len(calls) == 7
    assert len(factories) == 2  # one, plus a fresh one after the failed frame

    with np.load(frames) as data:
        positions, temperatures = data["positions"], data["temperature"]
    chunk1 = read(out / "chunk_00001.extxyz.gz", ":")
    assert [a.info["frame_index"] for a in chunk1] == [3, 5]  # frame 4 skipped, not faked
    for atoms in read_dataset(out):
        index = atoms.info["frame_index"]
        r = positions[index].astype(np.float64)
        assert atoms.get_potential_energy() == pytest.approx(0.05 * (r**2).sum())
        np.testing.assert_allclose(atoms.get_forces(), -0.1 * r, atol=1e-7)  # %.8f in file
        assert atoms.info["temperature"] == pytest.approx(temperatures[index])
        assert "GFN2-xTB" in atoms.info["method"]
    with (out / "failed_w0.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows == [["frame_index", "reason"],
                    ["4", "RuntimeError: SCF did not converge in 250 iterations"]]

    # Resume: only the deleted chunk is recomputed; the failure is not logged twice.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("chunk_*.extxyz.gz")}
    (out / "chunk_00001.extxyz.gz").unlink()
    calls.clear()
    written = label_frames(frames, out, factory, chunk_size=3, progress=False)
    assert [p.name for p in written] == ["chunk_00001.extxyz.gz"]
    assert len(calls) == 3
    for name in ("chunk_00000.extxyz.gz", "chunk_00002.extxyz.gz"):
        assert (out / name).stat().st_mtime_ns == mtimes[name]
    with (out / "failed_w0.csv").open() as handle:
        assert len(list(csv.reader(handle))) == 2

    # Nothing left to do: no calculator is even made.
    factories.clear()
    assert label_frames(frames, out, factory, chunk_size=3, progress=False) == []
    assert factories == []


def test_labelling_nonfinite_and_warning_are_failures(tmp_path):
    frames = _frames_npz(tmp_path / "frames.npz", n_frames=4,
                         markers={1: FAIL_NAN, 2: FAIL_WARN})
    out = tmp_path / "labelled"
    label_frames(frames, out, lambda: ToyCalculator([]), chunk_size=10, progress=False)
    assert [a.info["frame_index"] for a in read(out / "chunk_00000.extxyz.gz", ":")] == [0, 3]
    with (out / "failed_w0.csv").open() as handle:
        reasons = {int(row[0]): row[1] for row in list(csv.reader(handle))[1:]}
    assert set(reasons) == {1, 2}
    assert "non-finite" in reasons[1]
    assert "RuntimeWarning" in reasons[2]


def test_labelling_workers_split_chunks(tmp_path):
    frames = _frames_npz(tmp_path / "frames.npz", n_frames=7)
    out = tmp_path / "labelled"
    first = label_frames(frames, out, lambda: ToyCalculator([]), chunk_size=2, worker=0,
                         n_workers=2, progress=False)
    second = label_frames(frames, out, lambda: ToyCalculator([]), chunk_size=2, worker=1,
                          n_workers=2, progress=False)
    assert [p.name for p in first] == ["chunk_00000.extxyz.gz", "chunk_00002.extxyz.gz"]
    assert [p.name for p in second] == ["chunk_00001.extxyz.gz", "chunk_00003.extxyz.gz"]
    assert sorted(a.info["frame_index"] for a in read_dataset(out)) == list(range(7))
    # A plain (uncompressed) chunk from an older run counts as done.
    gz = out / "chunk_00000.extxyz.gz"
    (out / "chunk_00000.extxyz").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    assert label_frames(frames, out, lambda: ToyCalculator([]), chunk_size=2, worker=0,
                        n_workers=2, progress=False) == []
    with pytest.raises(ValueError, match="worker=2"):
        label_frames(frames, out, lambda: ToyCalculator([]), worker=2, n_workers=2)
    with pytest.raises(ValueError, match="chunk_size=0"):
        label_frames(frames, out, lambda: ToyCalculator([]), chunk_size=0)


def test_a_chunk_whose_every_frame_fails_leaves_the_data_readable(tmp_path):
    frames = _frames_npz(tmp_path / "frames.npz", n_frames=5,
                         markers={3: FAIL_RAISE, 4: FAIL_RAISE})
    out = tmp_path / "labelled"
    calls: list[int] = []
    written = label_frames(frames, out, lambda: ToyCalculator(calls), chunk_size=3,
                           progress=False)
    assert [p.name for p in written] == ["chunk_00000.extxyz.gz"]
    assert sorted(a.info["frame_index"] for a in read_dataset(out)) == [0, 1, 2]
    calls.clear()  # done, failures and all: not tried again
    assert label_frames(frames, out, lambda: ToyCalculator(calls), chunk_size=3,
                        progress=False) == []
    assert calls == []


def test_labelling_refuses_another_chunk_size_or_other_frames(tmp_path):
    """A chunk is done by its index: resumed with another chunk size, frames would be
    skipped or labelled twice, so the directory records what it labels."""
    frames = _frames_npz(tmp_path / "frames.npz", n_frames=7)
    out = tmp_path / "labelled"
    label_frames(frames, out, lambda: ToyCalculator([]), chunk_size=2, progress=False)
    with pytest.raises(ValueError, match="chunk_size 2 -> 4"):
        label_frames(frames, out, lambda: ToyCalculator([]), chunk_size=4, progress=False)
    other = _frames_npz(tmp_path / "other.npz", n_frames=7, markers={0: 5.0})
    with pytest.raises(ValueError, match="frames_sha256"):
        label_frames(other, out, lambda: ToyCalculator([]), chunk_size=2, progress=False)
    with pytest.raises(ValueError, match="charge -2 .*-> .*charge 0"):
        label_frames(frames, out, lambda: ToyCalculator([]), chunk_size=2, progress=False,
                     method=reference_method(0))
    # A directory from before the record: its chunks' frame indices are checked instead,
    # and an empty chunk file (every frame failed) becomes the marker.
    (out / "labelling.json").unlink()
    with pytest.raises(ValueError, match="chunk_00001.extxyz.gz holds frames 2-3"):
        label_frames(frames, out, lambda: ToyCalculator([]), chunk_size=4, progress=False)
    (out / "chunk_00003.extxyz.gz").unlink()
    write(out / "chunk_00003.extxyz.gz", [], format="extxyz")
    assert label_frames(frames, out, lambda: ToyCalculator([]), chunk_size=2,
                        progress=False) == []
    assert (out / ".chunk_00003.all_failed").is_file()
    assert sorted(a.info["frame_index"] for a in read_dataset(out)) == list(range(6))


def test_the_label_command_sets_tblites_threads_and_names_bad_input(tmp_path):
    """tblite runs on the OpenMP runtime torch started before the command could set
    OMP_NUM_THREADS: --threads must reach it anyway. Run in a fresh interpreter, as the
    command is, with the variable unset."""
    import subprocess
    import sys
    import textwrap

    frames = _frames_npz(tmp_path / "frames.npz", n_frames=2)
    script = textwrap.dedent(f"""
        import ctypes, os
        import numpy as np
        from ase.calculators.emt import EMT
        import freecg_md.data.labelling as labelling
        from freecg_md.data.label import main
        seen = []
        def factory(charge):
            paths = [p for p in open(f"/proc/{{os.getpid()}}/maps").read().split()
                     if p.endswith("torch/lib/libgomp.so.1")]
            seen.append(ctypes.CDLL(paths[0]).omp_get_max_threads() if paths else None)
            return EMT()
        labelling.default_reference_calculator = factory
        assert main([{str(frames)!r}, {str(tmp_path / "out")!r}, "--threads", "1"]) == 0
        print("threads", seen)
        """)
    # The runtime starts with 3 threads, whatever the cores: --threads 1 must override it.
    env = {**os.environ, "OMP_NUM_THREADS": "3"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    if "threads [None]" in done.stdout:
        pytest.skip("torch's OpenMP runtime is not torch/lib/libgomp.so.1 on this platform")
    assert "threads [1]" in done.stdout, done.stderr[-2000:]
    from freecg_md.data.label import main

    assert main([str(tmp_path / "missing.npz"), str(tmp_path / "out2")]) == 2
    assert main([str(frames), str(tmp_path / "out3"), "--worker", "3"]) == 2


def test_gfn2_xtb_labels_one_chignolin_frame():
    pytest.importorskip("tblite")
    from freecg_md.data.labelling import default_reference_calculator

    atoms = load_chignolin().atoms.copy()
    atoms.calc = default_reference_calculator()
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    assert np.isfinite(energy) and energy < -7000.0  # eV; about -7740 for this structure
    assert forces.shape == (166, 3) and np.all(np.isfinite(forces))
    # The hydrogens were relaxed with amber14, so xTB forces are moderate, not clashes.
    assert np.abs(forces).max() < 10.0


# --- datasets -----------------------------------------------------------------------------


def test_dataset_round_trip_gzip_and_tmp_files_skipped(tmp_path):
    chunks = tmp_path / "chunks"
    chunks.mkdir()
    structures = _labelled(4)
    write_dataset(structures[:2], chunks / "chunk_00000.extxyz")
    write_dataset(structures[2:], chunks / "chunk_00001.extxyz")
    # A labeller's half-written chunk must not be read.
    (chunks / ".chunk_00002.tmp.extxyz").write_text("5\nProperties=species:S:1\nC")
    merged = merge_chunks(chunks, tmp_path / "all.extxyz.gz")
    assert merged.read_bytes()[:2] == b"\x1f\x8b"  # really gzip
    back = read_dataset(merged)
    assert len(back) == 4
    for a, b in zip(structures, back, strict=True):
        assert b.get_potential_energy() == pytest.approx(a.get_potential_energy())
        # extxyz stores arrays with 8 decimals.
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-7)
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-7)


def test_dataset_missing_forces(tmp_path):
    structures = _labelled(2)
    structures[1].calc = SinglePointCalculator(structures[1], energy=1.0)
    path = tmp_path / "bad.extxyz"
    write(path, structures, format="extxyz")
    with pytest.raises(DatasetError, match=r"bad\.extxyz, frame 1: no forces"):
        read_dataset(path)


def test_dataset_missing_energy(tmp_path):
    structures = _labelled(2)
    atoms = structures[0]
    atoms.calc = SinglePointCalculator(atoms, forces=np.zeros((5, 3)))
    path = tmp_path / "bad.extxyz"
    write(path, structures, format="extxyz")
    with pytest.raises(DatasetError, match="frame 0: no energy"):
        read_dataset(path)


def test_dataset_forces_of_wrong_shape(tmp_path):
    atoms = _labelled(1)[0]
    atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((4, 3)))
    with pytest.raises(DatasetError, match=r"structure 0: forces have shape \(4, 3\)"):
        write_dataset([atoms], tmp_path / "out.extxyz")
    # The same problem in a file: a forces column with two components.
    path = tmp_path / "bad.extxyz"
    path.write_text("2\nProperties=species:S:1:pos:R:3:forces:R:2 energy=-1.0 pbc=\"F F F\"\n"
                    "H 0.0 0.0 0.0 0.1 0.2\nH 0.0 0.0 0.74 0.1 0.2\n")
    with pytest.raises(DatasetError, match=r"bad\.extxyz"):
        read_dataset(path)


@pytest.mark.parametrize("where", ["energy", "forces", "positions"])
def test_dataset_non_finite(tmp_path, where):
    atoms = _labelled(1)[0]
    energy, forces = atoms.get_potential_energy(), atoms.get_forces().copy()
    if where == "energy":
        energy = float("nan")
    elif where == "forces":
        forces[2, 1] = np.inf
    atoms.calc = None  # else moving an atom would invalidate the labels, not corrupt them
    if where == "positions":
        atoms.positions[3, 0] = np.nan
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    path = tmp_path / "bad.extxyz"
    write(path, [atoms], format="extxyz")
    with pytest.raises(DatasetError, match=r"bad\.extxyz, frame 0: non-finite"):
        read_dataset(path)


def test_dataset_unknown_element(tmp_path):
    structures = _labelled(3)
    odd = structures[2]
    energy, forces = odd.get_potential_energy(), odd.get_forces()
    odd.numbers[1] = 26  # Fe
    odd.calc = SinglePointCalculator(odd, energy=energy, forces=forces)
    odd.info["frame_index"] = 41
    with pytest.raises(DatasetError, match=r"structure 2 \(frame_index 41\).*Fe"):
        check_elements(structures, [1, 6, 7, 8])
    check_elements(structures[:2], [1, 6, 7, 8])
    path = write_dataset(structures, tmp_path / "set.extxyz")
    with pytest.raises(DatasetError, match=r"set\.extxyz, frame 2: contains element\(s\) Fe"):
        read_dataset(path, allowed_numbers=[1, 6, 7, 8])


def test_dataset_empty_and_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        read_dataset(tmp_path / "nope.extxyz")
    with pytest.raises(DatasetError, match="no structures"):
        read_dataset(tmp_path)
