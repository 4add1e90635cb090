"""Independent fixed-temperature GFN1-xTB Langevin runs of Au25(SCH3)18⁻ (held-out test runs).

The bundled Au25 set is one heating run, so any split of it is autocorrelated or a
temperature extrapolation. These runs give models a trajectory they never saw:

    OMP_NUM_THREADS=1 python data-generation/au25_fixed_temperature/generate.py 300
    OMP_NUM_THREADS=1 python data-generation/au25_fixed_temperature/generate.py 500

Start: ../shared/structures/au25_sch3_18.xyz (the optimized cluster; not shipped).
Settings: charge -1, Langevin 1.5 fs, friction 0.01/fs, 700 steps, every 2nd step kept
(351 frames), seed 25000 + T. The output extxyz is the checkpoint: rerunning the same
command continues an interrupted run exactly (mlmlearn.datasets.run_md). The finished
runs are stored here xz-compressed (ase.io.read reads them as they are; `xz -dk` one
before resuming it). All 351 frames of both runs pass mlmlearn.datasets.frame_integrity.
The frames carry the start file's comment words as stray ``info`` keys (ASE parses the
comment line); pack the runs by their named fields only.
"""

import sys
from pathlib import Path

from ase.io import read
from tblite.ase import TBLite

from mlmlearn.datasets import run_md

here = Path(__file__).resolve().parent
T = float(sys.argv[1])
start = read(here.parents[2] / "shared" / "structures" / "au25_sch3_18.xyz")
run_md(
    start,
    TBLite(method="GFN1-xTB", charge=-1, verbosity=0),
    here / f"Au25(SCH3)18_{T:.0f}K.extxyz",
    n_steps=700,
    timestep=1.5,
    temperature=T,
    integrator="langevin",
    friction=0.01,
    write_interval=2,
    seed=25000 + int(T),
    verbose=1,
)
