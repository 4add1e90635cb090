"""Atomistic inputs: atomic environments, neighbour lists, gold-thiolate atom types, SOAP, MBTR.

Needs mlmlearn's ``atoms`` extra (ase, dscribe, numba; ``pip install ".[atoms]"``
in the source tree); those packages are imported when used.
"""

from ._atom_types import GOLD_THIOLATE_TYPES, AtomTypingError, gold_thiolate_types
from ._environments import (
    AtomicEnvironments,
    InconsistentStructureError,
    MissingForcesError,
    MissingReferenceError,
    Neighborhood,
    StaleCalculatorError,
)
from ._mbtr import MBTR
from ._neighbors import MissingNeighborsError, NeighborList, neighbor_list
from ._soap import SOAP

__all__ = [
    "AtomicEnvironments",
    "AtomTypingError",
    "GOLD_THIOLATE_TYPES",
    "InconsistentStructureError",
    "MBTR",
    "MissingForcesError",
    "MissingNeighborsError",
    "MissingReferenceError",
    "Neighborhood",
    "NeighborList",
    "SOAP",
    "StaleCalculatorError",
    "gold_thiolate_types",
    "neighbor_list",
]
