"""Models of whole structures: per-atom-type force fields and their ASE calculator.

:class:`ForceField` predicts the force on every atom as an EMLM norm times an
OAMLM direction, one pair of models per atom type (paper IV). Needs mlmlearn's
``atoms`` extra (``pip install ".[atoms]"``).
"""

from ._forcefield import (
    ForceField,
    ModelVersionWarning,
    default_direction_model,
    default_norm_model,
)
from ._forces_only import EnergyRequiredError, ForcesOnly
from ._potential import EMLMPotential, OffsetsNotIdentifiableError, default_descriptor
from ._repulsion import ZBL
from ._rigid import remove_net_force
from ._typing import GOLD_THIOLATE_FAMILIES, UnknownAtomTypeError

__all__ = [
    "EMLMPotential",
    "EnergyRequiredError",
    "ForceField",
    "ForcesOnly",
    "GOLD_THIOLATE_FAMILIES",
    "ModelVersionWarning",
    "UnknownAtomTypeError",
    "default_direction_model",
    "default_norm_model",
    "OffsetsNotIdentifiableError",
    "ZBL",
    "default_descriptor",
    "remove_net_force",
    "MLMCalculator",
]


def __getattr__(name):
    # the calculator subclasses ASE's Calculator, so ASE loads when it is first asked for
    if name == "MLMCalculator":
        from ._calculator import MLMCalculator

        return MLMCalculator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
