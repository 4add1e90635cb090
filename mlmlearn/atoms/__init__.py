"""Atomistic inputs: atomic environments, gold-thiolate atom types, SOAP and MBTR.

Needs ``pip install mlmlearn[atoms]`` (ase, dscribe); they are imported when used.
"""

from ._atom_types import GOLD_THIOLATE_TYPES, AtomTypingError, gold_thiolate_types
from ._environments import AtomicEnvironments, MissingForcesError, Neighbourhood
from ._mbtr import MBTR
from ._soap import SOAP

__all__ = [
    "AtomicEnvironments",
    "AtomTypingError",
    "GOLD_THIOLATE_TYPES",
    "MBTR",
    "MissingForcesError",
    "Neighbourhood",
    "SOAP",
    "gold_thiolate_types",
]
