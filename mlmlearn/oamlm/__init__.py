"""The orientation adaptive MLM: force directions by aligning reference environments.

:class:`OAMLM` is the estimator; the alignment step is a strategy object
(:class:`Alignment` and its subclasses), so users can plug in their own.
"""

from ._alignment import Alignment, MissingNeighborsError, PermutationAlignment
from ._gold_thiolate import GoldThiolateAlignment
from ._oamlm import OAMLM

__all__ = [
    "OAMLM",
    "Alignment",
    "GoldThiolateAlignment",
    "MissingNeighborsError",
    "PermutationAlignment",
]
