"""Reference data: start structures, MD and relaxation generators, and bundled xTB data sets.

Needs mlmlearn's ``atoms`` extra (``pip install ".[atoms]"`` in the source tree); regenerating data
also needs the ``xtb`` extra (``pip install ".[xtb]"``).
"""

from ._builders import gold_thiolate_ring, linear_alkane
from ._bundled import (
    isolated_atom_energies,
    load_alkanes,
    load_au25,
    load_gold_thiolate_rings,
)
from ._integrity import frame_integrity
from ._md import read_frames, run_md
from ._relax import run_relaxation
from ._sampling import logarithmic_indices, training_mask

__all__ = [
    "frame_integrity",
    "gold_thiolate_ring",
    "isolated_atom_energies",
    "linear_alkane",
    "load_alkanes",
    "load_au25",
    "load_gold_thiolate_rings",
    "logarithmic_indices",
    "read_frames",
    "run_md",
    "run_relaxation",
    "training_mask",
]
