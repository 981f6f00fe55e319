"""Replica-exchange MD of chignolin.

The same as ``freecg-md remd`` (:mod:`freecg_md.commands.remd`),
as a script: ``python simulations/remd_chignolin.py --help``.
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads libgomp

from freecg_md.commands.remd import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
