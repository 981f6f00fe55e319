"""FreeCG-MD: molecular dynamics with the FreeCG equivariant force field.

Units follow ASE: Å, eV, eV/Å, fs, K.
"""

__version__ = "0.1.0"

from importlib import import_module
from typing import TYPE_CHECKING, Any

# The names are imported on first use (PEP 562), so that ``freecg-md --help`` and the
# command line's environment settings come before torch loads.
_EXPORTS = {
    "FORMAT_VERSION": "io", "ModelFileError": "io", "load_model": "io",
    "read_model_file": "io", "save_model": "io", "shipped_model": "io",
    "FreeCGCalculator": "calculator", "Committee": "committee", "load_committee": "committee",
    "NeighborList": "neighbors", "NeighborListCache": "neighbors",
    "build_neighbor_list": "neighbors", "FreeCG": "nn", "FreeCGConfig": "nn",
    "keep_freed_memory": "memory",
}

if TYPE_CHECKING:
    from .calculator import FreeCGCalculator
    from .committee import Committee, load_committee
    from .io import (
        FORMAT_VERSION,
        ModelFileError,
        load_model,
        read_model_file,
        save_model,
        shipped_model,
    )
    from .memory import keep_freed_memory
    from .neighbors import NeighborList, NeighborListCache, build_neighbor_list
    from .nn import FreeCG, FreeCGConfig


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    try:  # a subpackage or module, as ``import freecg_md; freecg_md.md`` expects
        return import_module(f".{name}", __name__)
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":  # a dependency of that module is missing
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
    "keep_freed_memory",
    "load_committee",
    "load_model",
    "read_model_file",
    "save_model",
    "shipped_model",
]
