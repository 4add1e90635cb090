"""A 12-candidate SOAP + EMLM sweep at 1 and 2 MPI ranks: the speed-up of the "mpi" backend.

    python benchmarks/bench_mpi_search.py          # launches mpiexec -n 1 and -n 2 itself

Force norms of alkane carbons (bundled GFN2-xTB data, every 10th training frame),
``GridSearchCV(make_pipeline(SOAP, MinMaxScaler, EMLM(300)), 3 n_max × 2 r_cut × 2 beta,
cv=GroupKFold(3) by MD run)``, identical script on every rank, under
``joblib.parallel_backend("mpi")``. One BLAS thread per rank.
"""

import os
import subprocess
import sys
import time
from pathlib import Path


def job():
    import joblib
    import numpy as np
    from mpi4py import MPI
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    import mlmlearn.model_selection  # noqa: F401  (registers "mpi")
    from mlmlearn import EMLM
    from mlmlearn.atoms import SOAP, AtomicEnvironments
    from mlmlearn.datasets import load_alkanes

    data = load_alkanes()
    frames = [f for f, s in zip(data.frames, data.split, strict=True) if s == "train"][::10]
    env = AtomicEnvironments(frames, species="C", groups=[f.info["run"] for f in frames])
    norms = np.linalg.norm(env.forces, axis=1)
    model = make_pipeline(SOAP(n_max=4, l_max=3), MinMaxScaler(), EMLM(references=300))
    grid = {
        "soap__n_max": [3, 4, 6],
        "soap__r_cut": [3.0, 4.0],
        "emlm__beta": [1e-8, 1e-2],
    }
    search = GridSearchCV(model, grid, cv=GroupKFold(3), scoring="neg_root_mean_squared_error")
    MPI.COMM_WORLD.Barrier()
    t0 = time.perf_counter()
    with joblib.parallel_backend("mpi"):
        search.fit(env, norms, groups=env.groups)
    elapsed = time.perf_counter() - t0
    if MPI.COMM_WORLD.Get_rank() == 0:
        best = -search.best_score_
        print(f"{elapsed:.3f} {best:.6f} {search.best_params_}", flush=True)


def main():
    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    times = {}
    for n in (1, 2):
        out = subprocess.run(
            [str(mpiexec), "-n", str(n), sys.executable, __file__, "--job"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout.split(maxsplit=2)
        times[n] = float(out[0])
        print(
            f"{n} rank(s): {times[n]:7.1f} s   best RMSE {float(out[1]):.4f} eV/Å  {out[2].strip()}"
        )
    print(f"speed-up on 2 ranks: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    job() if "--job" in sys.argv else main()
