"""Metropolis Monte Carlo with machine-learned or reference energies (thesis 2.5, paper II).

:class:`MonteCarlo` runs Metropolis sampling (thesis eq. 2.34) with the energies of any
ASE calculator: mlmlearn's potential or paper II's whole-structure energy model through
:class:`~mlmlearn.forcefield.MLMCalculator`, or tblite's GFN-xTB for a reference run.
The moving parts come from a move set: paper II's for gold–methylthiolate clusters
(:class:`GoldThiolateMoves`), single atoms (:class:`AtomMoves`), or your own. With
paper II's energy model, :class:`IncrementalEnergy` updates the energy from the moved
atoms' pairs only. :func:`montecarlo_active_learning` automates paper II's lesson: MC with
the model, the frames it must not trust computed with the reference method, added, refitted.
:class:`ReplicaExchange` runs a temperature ladder with configuration swaps, its replicas
spread over MPI ranks.
"""

from ._active import (
    AnyOf,
    BrokenGeometry,
    FarFromReferences,
    MonteCarloActiveLearningResult,
    montecarlo_active_learning,
)
from ._engine import CalculatorEnergy, MonteCarlo
from ._exchange import ReplicaExchange
from ._incremental import IncrementalEnergy
from ._moves import (
    AtomMoves,
    Displacement,
    GoldThiolateMoves,
    MethylMove,
    MoveSet,
    Part,
    StructureNotRecognizedError,
    SulfurMove,
)

__all__ = [
    "AnyOf",
    "AtomMoves",
    "BrokenGeometry",
    "FarFromReferences",
    "MonteCarloActiveLearningResult",
    "montecarlo_active_learning",
    "CalculatorEnergy",
    "Displacement",
    "GoldThiolateMoves",
    "IncrementalEnergy",
    "MethylMove",
    "MonteCarlo",
    "MoveSet",
    "Part",
    "ReplicaExchange",
    "StructureNotRecognizedError",
    "SulfurMove",
]
