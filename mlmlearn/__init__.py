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

__all__ = ["EMLM", "MLM", "HuberMLM", "OAMLM", "RSMaximin", "RandomReferences", "__version__"]


def __getattr__(name):
    # OAMLM's module loads its compiled alignment kernels (numba) on first use only,
    # but is imported lazily all the same so `import mlmlearn` stays light.
    if name == "OAMLM":
        from .oamlm import OAMLM

        return OAMLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
