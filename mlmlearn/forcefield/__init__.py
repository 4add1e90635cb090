"""Models of whole structures: potentials, force fields, energy models, their ASE calculator.

:class:`EMLMPotential` gives energies and their exact forces; :class:`ForceField`
predicts the force on every atom as an EMLM norm times an OAMLM direction, one pair of
models per atom type (paper IV); :func:`default_energy_model` is paper II's MBTR → EMLM
energy of whole structures. Needs mlmlearn's ``atoms`` extra (``pip install ".[atoms]"``).
"""

from ._energy_model import MBTR_PARAMETER_SETS, default_energy_model
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
    "default_energy_model",
    "default_norm_model",
    "MBTR_PARAMETER_SETS",
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
