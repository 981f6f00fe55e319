"""Free-energy landscape, melting curve and convergence verdict of a run.

The same as ``freecg-md plot landscape`` (:mod:`freecg_md.commands.plot`),
as a script: ``python analysis/plot_landscape.py --help``.
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads libgomp

from freecg_md.commands.plot import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["landscape", *sys.argv[1:]]))
