"""A run's per-frame numbers as a small .npz.

The same as ``freecg-md reduce`` (:mod:`freecg_md.commands.reduce`),
as a script: ``python analysis/reduce_run.py --help``.
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads libgomp

from freecg_md.commands.reduce import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
