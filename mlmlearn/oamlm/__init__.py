"""OAMLM: force directions by aligning reference environments (work in progress)."""

from ._alignment import Alignment, MissingNeighboursError, PermutationAlignment
from ._oamlm import OAMLM

__all__ = ["OAMLM", "Alignment", "MissingNeighboursError", "PermutationAlignment"]
