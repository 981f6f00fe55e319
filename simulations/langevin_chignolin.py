"""Independent Langevin trajectories of chignolin.

The same as ``freecg-md langevin`` (:mod:`freecg_md.commands.langevin`),
as a script: ``python simulations/langevin_chignolin.py --help``.
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads libgomp

from freecg_md.commands.langevin import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
