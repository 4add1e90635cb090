"""Independent fixed-temperature GFN1-xTB Langevin runs of Au25(SCH3)18⁻ (held-out test runs).

The bundled Au25 heating run is one trajectory, so any split of it is autocorrelated or a
temperature extrapolation. These runs give models a trajectory they never saw. One run per
process, so the two can share two cores:

    OMP_NUM_THREADS=1 python data-generation/au25_fixed_temperature/generate.py 300
    OMP_NUM_THREADS=1 python data-generation/au25_fixed_temperature/generate.py 500

This is the recipe ``mlmlearn.datasets._recipes.generate_au25_fixed_temperature`` with the
settings ``AU25_FIXED_TEMPERATURE`` (charge -1, Langevin 1.5 fs, friction 0.01/fs, 700 steps,
every 2nd step kept: 351 frames, seed 25000 + T), which
``python -m mlmlearn.datasets.generate au25`` also runs; the shipped runs were made by an
earlier copy of this script calling ``run_md`` with the same arguments (wall time 2 765 s and
2 697 s, one thread each). Start: ../shared/structures/au25_sch3_18.xyz (the optimized cluster;
not shipped).

The output extxyz is the checkpoint: rerunning the same command continues an interrupted run
exactly (mlmlearn.datasets.run_md). The finished runs are stored here xz-compressed
(ase.io.read reads them as they are; `xz -dk` one before resuming it). All 351 frames of both
runs pass mlmlearn.datasets.frame_integrity. The shipped frames carry the start file's comment
words as stray ``info`` keys (ASE parses the comment line; the recipe now drops them); pack
the runs by their named fields only, as ``bundle.py`` does.
"""

import sys
from pathlib import Path

from mlmlearn.datasets._recipes import generate_au25_fixed_temperature

here = Path(__file__).resolve().parent
generate_au25_fixed_temperature(
    here.parents[2] / "shared" / "structures" / "au25_sch3_18.xyz",
    here,
    temperatures=[float(sys.argv[1])],
    verbose=1,
)
