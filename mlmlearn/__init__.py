"""mlmlearn: distance-based machine learning (the Minimal Learning Machine family)
for atomistic simulation, as scikit-learn estimators.

Core estimators need only numpy, scipy and scikit-learn; the atomistic parts
import their heavy dependencies (ase, dscribe, tblite, mpi4py, matplotlib) when
used.
"""

from .emlm import EMLM
from .mlm import MLM
from .references import RandomReferences, RSMaximin
from .robust import HuberMLM

__version__ = "0.1.0"

__all__ = ["EMLM", "MLM", "HuberMLM", "RSMaximin", "RandomReferences", "__version__"]
