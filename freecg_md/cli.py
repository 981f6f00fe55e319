"""The ``freecg-md`` command: ``freecg-md SUBCOMMAND [ARGS]``; ``freecg-md --help`` lists them.

Each subcommand is a thin wrapper over a module's ``main``: ``freecg-md train CONFIG`` is
``python -m freecg_md.train CONFIG``, and so on.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module

# libgomp reads this when torch loads it (the subcommand's import, below): spinning OpenMP
# threads steal the cores that worker processes and other jobs need.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# name -> (module with main(argv), one line of help)
SUBCOMMANDS = {
    "train": ("freecg_md.train.__main__", "train a model from a JSON config (resumable)"),
    "export": ("freecg_md.train.export", "write a training run's best model, with its test "
                                         "metrics, as a model file"),
    "sample": ("freecg_md.data.sample", "classical MD (OpenMM) of chignolin for reference "
                                        "conformations"),
    "harvest": ("freecg_md.data.harvest", "gather frames of MD runs for labelling, ranked by "
                                          "a committee's disagreement"),
    "label": ("freecg_md.data.label", "label conformations with GFN2-xTB/ALPB(water) "
                                      "(resumable chunks)"),
    "domain": ("freecg_md.domain", "record a model's training domain (elements, compositions, "
                                   "shortest distances) in its file"),
    "remd": ("freecg_md.commands.remd", "replica-exchange MD of chignolin (resumable; the "
                                        "flagship)"),
    "langevin": ("freecg_md.commands.langevin", "independent Langevin trajectories of "
                                                "chignolin as one batch (resumable)"),
    "stability": ("freecg_md.commands.stability", "hot trajectories of chignolin, failures "
                                                  "counted"),
    "classical-remd": ("freecg_md.classical_remd", "replica exchange of chignolin with "
                       "amber14 + GBn2 (OpenMM): the classical reference ensemble"),
    "plot": ("freecg_md.commands.plot", "figures of a run: landscape, remd, rmsd"),
    "reduce": ("freecg_md.commands.reduce", "a run's per-frame numbers as a small .npz, to "
                                            "ship"),
}

USAGE = "usage: freecg-md {" + ",".join(SUBCOMMANDS) + "} ... | freecg-md --help"


def help_text() -> str:
    lines = [USAGE, "", "FreeCG molecular dynamics (units: Å, eV, fs, K).", "", "subcommands:"]
    lines += [f"  {name:<14} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "freecg-md SUBCOMMAND --help for a subcommand's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(help_text())
        return 0
    if not argv or argv[0] not in SUBCOMMANDS:
        given = f"unknown subcommand {argv[0]!r}; " if argv else ""
        print(f"{given}{USAGE}", file=sys.stderr)
        return 2
    module, _ = SUBCOMMANDS[argv[0]]
    # argparse names the program after sys.argv[0]: "freecg-md remd" in usage and errors.
    saved, sys.argv = sys.argv, [f"freecg-md {argv[0]}", *argv[1:]]
    try:
        return int(import_module(module).main(argv[1:]) or 0)
    finally:
        sys.argv = saved


if __name__ == "__main__":
    sys.exit(main())
