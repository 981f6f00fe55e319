"""Stability of the model's own MD, failures counted.

The same as ``freecg-md stability`` (:mod:`freecg_md.commands.stability`),
as a script: ``python simulations/stability_chignolin.py --help``.
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads libgomp

from freecg_md.commands.stability import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
