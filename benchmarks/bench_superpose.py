"""Alignments per second: mlmlearn's QCP kernel vs a batched numpy SVD (Kabsch) on one core.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_superpose.py

Point-set sizes of paper IV's alignment rules: 4 (hydrogen: self, C, 2 H), 5 (carbon:
self, S, 3 H), 7 (unit gold: self and two S/C/Au blocks), 13 (core gold: self and 12
neighbours).
"""

import numpy as np
from _common import timed

from mlmlearn.oamlm._superpose import kabsch, qcp

if __name__ == "__main__":
    rng = np.random.default_rng(0)
    qcp(rng.normal(size=(2, 3, 3)), rng.normal(size=(2, 3, 3)))  # compile / load the cache
    print("points  pairs      QCP M/s   SVD M/s   ratio")
    for n_points in (4, 5, 7, 13):
        n = 1_000_000
        X = rng.normal(size=(n, n_points, 3))
        Y = rng.normal(size=(n, n_points, 3))
        t_qcp, _ = timed(qcp, X, Y, repeat=3)
        m = 200_000
        t_svd, _ = timed(kabsch, X[:m], Y[:m], repeat=2)
        t_svd *= n / m
        rates = f"{n / t_qcp / 1e6:10.2f} {n / t_svd / 1e6:9.2f} {t_svd / t_qcp:7.1f}x"
        print(f"{n_points:6d} {n:8d} {rates}")
