"""Energy and force errors of FreeCG and its ablation on six conformations of a run.

    python analysis/conformation_errors.py runs/remd_chignolin [--out DIR]
        [--model FreeCG=models/chignolin.pt --model ablation=models/chignolin_visnet.pt]

Three conformations are picked near the folded basin's minimum of the run's landscape and
three near the unfolded basin's (the FreeCG paper's figure 5b), at least ``--spacing`` ps
apart in simulated time so that they are not copies of one another; each model's energy error
and force MAE against the reference method are written to ``conformation_errors.csv`` and
drawn in ``conformation_errors.png`` (kcal/mol). The reference is GFN2-xTB/ALPB(water),
charge -2 (tblite), the method that labelled the training data; ``--reference emt`` swaps in
ASE's EMT, a cheap stand-in for checking the plumbing only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from report_cli import DEFAULT_MODELS, parse_model  # this folder is on sys.path as a script

from freecg_md import FreeCGCalculator
from freecg_md.analysis.reports import conformation_errors_report
from freecg_md.analysis.rundir import read_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory")
    parser.add_argument("--out", type=Path, help="output directory (default RUN/plots)")
    parser.add_argument("--model", type=parse_model, action="append",
                        help="NAME=PATH of a model file (repeatable; default: the shipped "
                             "FreeCG model and its ablation, where present)")
    parser.add_argument("--reference", choices=["xtb", "emt"], default="xtb")
    parser.add_argument("--temperature-index", type=int, default=0)
    parser.add_argument("--discard", type=float, default=0.2)
    parser.add_argument("--spacing", type=float, default=1.0,
                        help="least simulated time between two picks, ps")
    args = parser.parse_args(argv)

    models = dict(args.model) if args.model else {
        name: path for name, path in DEFAULT_MODELS.items() if path.is_file()}
    if not models:
        parser.error("no model files found; pass --model NAME=PATH")
    if args.reference == "xtb":
        from freecg_md.data.labelling import default_reference_calculator
        reference = default_reference_calculator()
    else:
        from ase.calculators.emt import EMT
        reference = EMT()
    calculators = {name: FreeCGCalculator(str(path)) for name, path in models.items()}
    try:
        run = read_run(args.run)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = conformation_errors_report(run, calculators, reference,
                                        args.out or args.run / "plots",
                                        args.temperature_index, args.discard,
                                        min_spacing_ps=args.spacing)
    for name in calculators:
        energy = report["energy_error_kcal_mol"][name]
        forces = report["force_mae_kcal_mol_A"][name]
        print(f"{name}: |energy error| {sum(abs(e) for e in energy) / len(energy):.3f} "
              f"kcal/mol, force MAE {sum(forces) / len(forces):.3f} kcal/mol/Å (mean of "
              f"{len(energy)} conformations)")
    print(f"wrote {report['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
