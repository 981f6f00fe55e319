"""Does a run with a longer time step sample what the 1 fs run samples? Rung by rung.

    python analysis/timestep_check.py docs/results/remd_chignolin.npz \
        docs/results/remd_hmr_2fs.npz --out docs/results/remd_timestep_check.json

Reads two reduced REMD runs of the same ladder (``freecg-md reduce``): a reference (1 fs,
natural masses) and a test run (a longer step, e.g. with hydrogen mass repartitioning).
Masses do not enter the Boltzmann distribution of positions, so at every rung both runs
should give the same mean potential energy, and the integrator's kinetic temperature
should equal the bath's. Per rung, after ``--discard-ps`` of each run: the mean kinetic
temperature over the target, the mean potential energy of each run and their difference
(kJ/mol), each with a block-bootstrap standard error over blocks of ``--block-ps`` or of
the series' statistical inefficiency where that is longer, from the demultiplexed series
(the replica that held the rung at each frame). Prints a table and
writes it, with both runs' settings and model fingerprints, as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads libgomp

import numpy as np  # noqa: E402

from freecg_md.analysis.reduced import ReducedRun, load_reduced  # noqa: E402
from freecg_md.analysis.remd_stats import frames_at_temperature  # noqa: E402
from freecg_md.analysis.statistics import (  # noqa: E402
    block_bootstrap,
    statistical_inefficiency,
)
from freecg_md.units import KJ_MOL_PER_EV  # noqa: E402


def rung_series(run: ReducedRun, rung: int, discard_ps: float) -> tuple[np.ndarray, np.ndarray]:
    """The potential energy (eV) and kinetic temperature (K) at ladder index ``rung``, frame
    by frame after ``discard_ps``: each frame's value from the replica that held the rung."""
    holders = frames_at_temperature(run.temperature_index, rung)
    frames = np.arange(run.n_frames)
    keep = run.time_ps > discard_ps
    if keep.sum() < 2:
        raise ValueError(f"--discard-ps {discard_ps} leaves {int(keep.sum())} frames of "
                         f"{run.name} ({run.time_ps[-1] if run.n_frames else 0:.1f} ps); "
                         "expected at least 2")
    return run.energies[frames, holders][keep], run.kinetic_temperature[frames, holders][keep]


def block_of(run: ReducedRun, block_ps: float, series: np.ndarray) -> int:
    """Frames per bootstrap block of ``series`` (frames of ``run``): ``block_ps`` worth, or
    the series' statistical inefficiency where that is longer, so that blocks are nearly
    independent."""
    interval = float(np.median(np.diff(run.time_ps))) if run.n_frames > 1 else block_ps
    return max(1, round(block_ps / interval), math.ceil(statistical_inefficiency(series)))


def settings(run: ReducedRun) -> dict[str, object]:
    """What a reader needs to know of a run: its step, masses, length and model."""
    config = run.config.get("run", run.config)
    return {"name": run.name, "timestep_fs": config.get("timestep_fs"),
            "hydrogen_mass_amu": run.config.get("hydrogen_mass"),
            "friction_per_ps": config.get("friction_per_ps"),
            "length_ps": float(run.time_ps[-1]) if run.n_frames else 0.0,
            "model_fingerprint": run.model_fingerprint}


def compare(reference: ReducedRun, test: ReducedRun, discard_ps: float, block_ps: float
            ) -> dict[str, object]:
    """Per rung: kinetic temperature / target of both runs and the potential energies'
    difference (test - reference), with block-bootstrap standard errors."""
    if (reference.temperatures.shape != test.temperatures.shape
            or not np.allclose(reference.temperatures, test.temperatures)):
        raise ValueError(f"the runs have different ladders: {reference.temperatures.tolist()} "
                         f"and {test.temperatures.tolist()}")
    rungs = []
    for k, target in enumerate(test.temperatures):
        row: dict[str, object] = {"temperature_K": float(target)}
        energy = {}
        for name, run in (("reference", reference), ("test", test)):
            potential, kinetic = rung_series(run, k, discard_ps)
            kinetic_block = block_of(run, block_ps, kinetic)
            potential_block = block_of(run, block_ps, potential)
            ratio, ratio_error = block_bootstrap(kinetic / target, np.mean, kinetic_block)
            mean, error = block_bootstrap(potential * KJ_MOL_PER_EV, np.mean, potential_block)
            row[f"{name}_block_frames"] = {"kinetic": kinetic_block,
                                           "potential": potential_block}
            energy[name] = (mean, error)
            row[f"{name}_kinetic_ratio"] = [ratio, ratio_error]
            row[f"{name}_potential_kJ_mol"] = [mean, error]
        difference = energy["test"][0] - energy["reference"][0]
        row["potential_difference_kJ_mol"] = [
            difference, float(np.hypot(energy["test"][1], energy["reference"][1]))]
        rungs.append(row)
    return {"reference": settings(reference), "test": settings(test),
            "discard_ps": discard_ps, "block_ps": block_ps, "rungs": rungs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="reduced run at 1 fs (.npz)")
    parser.add_argument("test", type=Path, help="reduced run with the longer step (.npz)")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write")
    parser.add_argument("--discard-ps", type=float, default=1.0)
    parser.add_argument("--block-ps", type=float, default=1.0)
    args = parser.parse_args(argv)
    result = compare(load_reduced(args.reference), load_reduced(args.test), args.discard_ps,
                     args.block_ps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    ref, test = result["reference"], result["test"]
    print(f"reference {ref['name']}: {ref['timestep_fs']} fs, {ref['length_ps']:.1f} ps; test "
          f"{test['name']}: {test['timestep_fs']} fs, hydrogens "
          f"{test['hydrogen_mass_amu'] or 'natural'}, {test['length_ps']:.1f} ps")
    print("| T (K) | kinetic T / target, reference | test | <U> test - reference (kJ/mol) |")
    print("| --- | --- | --- | --- |")
    for row in result["rungs"]:
        ref_ratio, test_ratio = row["reference_kinetic_ratio"], row["test_kinetic_ratio"]
        diff = row["potential_difference_kJ_mol"]
        print(f"| {row['temperature_K']:.0f} | {ref_ratio[0]:.3f} ± {ref_ratio[1]:.3f} | "
              f"{test_ratio[0]:.3f} ± {test_ratio[1]:.3f} | {diff[0]:+.1f} ± {diff[1]:.1f} |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
