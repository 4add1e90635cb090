"""Alignments per second: mlmlearn's QCP kernel vs a batched numpy SVD (Kabsch) on one core.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_superpose.py

The last line is the fused kernel of the OAMLM (best of 24 orderings, accuracy included).
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
    # the fused all-pairs kernel the OAMLM calls: 200 inputs × 2 500 references × 24
    # orderings of 4 neighbours, accuracy (2.25) in the loop
    import itertools

    from mlmlearn.oamlm._superpose import best_alignments

    P = rng.normal(size=(200, 5, 3))
    S = rng.normal(size=(2500, 5, 3))
    orders = np.array([(0, *(1 + np.array(o))) for o in itertools.permutations(range(4))])
    best_alignments(P[:2], S[:2], orders)
    t_all, _ = timed(best_alignments, P, S, orders, repeat=2)
    n_all = len(P) * len(S) * len(orders)
    print(f"fused all-pairs kernel, 5 points, 24 orderings: {n_all / t_all / 1e6:.2f} M/s")
