"""Replica-exchange diagnostics of a run.

The same as ``freecg-md plot remd`` (:mod:`freecg_md.commands.plot`),
as a script: ``python analysis/plot_remd.py --help``.
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads libgomp

from freecg_md.commands.plot import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["remd", *sys.argv[1:]]))
