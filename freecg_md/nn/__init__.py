"""The FreeCG network (no I/O, no ASE)."""

from .group_cg import GroupCGTensorProduct, shuffle_abstract_edges
from .model import DEFAULT_SPECIES, FreeCG, FreeCGConfig

__all__ = [
    "DEFAULT_SPECIES",
    "FreeCG",
    "FreeCGConfig",
    "GroupCGTensorProduct",
    "shuffle_abstract_edges",
]
