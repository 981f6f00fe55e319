"""FreeCG-MD: molecular dynamics with the FreeCG equivariant force field.

Units follow ASE: Å, eV, eV/Å, fs, K.
"""

__version__ = "0.1.0"

from .calculator import FreeCGCalculator  # noqa: E402
from .committee import Committee, load_committee  # noqa: E402
from .io import (  # noqa: E402
    FORMAT_VERSION,
    ModelFileError,
    load_model,
    read_model_file,
    save_model,
    shipped_model,
)
from .neighbors import NeighborList, NeighborListCache, build_neighbor_list  # noqa: E402
from .nn import FreeCG, FreeCGConfig  # noqa: E402

__all__ = [
    "FORMAT_VERSION",
    "Committee",
    "FreeCG",
    "FreeCGCalculator",
    "FreeCGConfig",
    "ModelFileError",
    "NeighborList",
    "NeighborListCache",
    "__version__",
    "build_neighbor_list",
    "load_committee",
    "load_model",
    "read_model_file",
    "save_model",
    "shipped_model",
]
