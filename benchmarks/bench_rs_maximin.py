"""RS-maximin against the plain algorithm, on real SOAP descriptors and on synthetic clusters.

    python benchmarks/bench_rs_maximin.py [--n 20000] [--k 1000] [--plain-refs 0]
                                          [--no-synthetic] [--repeat 3]

Two cases, each printing the time of ``rs_maximin`` (projected lower bounds skip the
distances that cannot lower a sample's running minimum), the time of the plain algorithm
``_rs_maximin_plain`` (every sample updated with every reference; the test oracle), their
ratio, and whether the indices (and the minimum distances) are identical:

1. **real** (the issue's case): paper IV's SOAP (r_cut 4 Å, n_max 7, l_max 4, σ 0.25 Å,
   species Au, S, C, H; 2 030 features), min-max scaled as the force field's models do, of
   the first ``--n`` hydrogen environments of the bundled Au25(SCH3)18⁻ heating run, K =
   ``--k``. The descriptor matrix is computed from the bundled data (a few seconds) and
   cached in the temporary directory. The plain algorithm runs in full unless
   ``--plain-refs M`` asks for its first M references only (then its time is extrapolated
   linearly to K and the first M indices are compared; the script says so).
2. **synthetic**: N = 100 000, d = 1 000, K = 2 000, 20 Gaussian clusters (0.8 GB); the
   plain algorithm runs for its first 200 references, extrapolated.

One BLAS thread (threadpoolctl), CPU time, best of ``--repeat`` runs for rs_maximin; the
first call (numba compile or cache load) is timed apart.
"""

import argparse
import hashlib
import os
import tempfile
import time

import numpy as np
from _common import cpu_timed
from threadpoolctl import threadpool_limits

from mlmlearn import _maximin
from mlmlearn.references import _rs_maximin_plain, rs_maximin


def au25_hydrogen_soap(n):
    """Min-max scaled SOAP rows of the first ``n`` H environments of the bundled Au25 run."""
    from sklearn.preprocessing import MinMaxScaler

    from mlmlearn.atoms import SOAP, AtomicEnvironments
    from mlmlearn.datasets import load_au25
    from mlmlearn.forcefield._forcefield import SOAP_SETTINGS

    key = hashlib.sha1(repr((n, sorted(SOAP_SETTINGS.items()))).encode()).hexdigest()[:12]
    path = os.path.join(tempfile.gettempdir(), f"mlmlearn_bench_rs_maximin_{key}.npy")
    if os.path.exists(path):
        return np.load(path), path, 0.0
    t0 = time.process_time()
    env = AtomicEnvironments(load_au25().frames, species="H")
    if len(env) < n:
        raise ValueError(f"--n {n}: the bundled Au25 run has {len(env)} H environments")
    X = MinMaxScaler().fit_transform(SOAP(**SOAP_SETTINGS).fit_transform(env[:n]))
    seconds = time.process_time() - t0
    np.save(path, X)
    return X, path, seconds


def computed_fraction(X, k):
    """Fraction of the N·(K−1) update distances the pruned selection computes."""
    import mlmlearn.references as references

    counts = []
    update = references.pruned_update

    def counting(*args, **kwargs):
        counts.append(update(*args, **kwargs))
        return counts[-1]

    references.pruned_update = counting
    try:
        rs_maximin(X, k)
    finally:
        references.pruned_update = update
    return sum(counts) / (X.shape[0] * max(k - 1, 1)) if counts else 1.0


def compare(name, X, k, plain_refs, repeat):
    n, d = X.shape
    print(f"\n[{name}] N={n} d={d} K={k}")
    t_new, (idx, mind) = cpu_timed(rs_maximin, X, k, repeat=repeat)
    print(f"  rs_maximin (pruned):        {t_new:8.2f} s  ({k / t_new:.0f} references/s; "
          f"{100 * computed_fraction(X, k):.2f} % of the N·K distances computed)")
    if plain_refs and plain_refs < idx.size:
        t_part, (ref, _) = cpu_timed(_rs_maximin_plain, X, plain_refs)
        t_plain = t_part * (idx.size - 1) / max(plain_refs - 1, 1)
        same = np.array_equal(ref, idx[:plain_refs])
        print(f"  plain algorithm:            {t_plain:8.2f} s  EXTRAPOLATED from its first "
              f"{plain_refs} references ({t_part:.2f} s)")
        print(f"  ratio {t_plain / t_new:.1f}x; identical indices (first {plain_refs}): {same}")
    else:
        t_plain, (ref, ref_mind) = cpu_timed(_rs_maximin_plain, X, k)
        same = np.array_equal(ref, idx)
        print(f"  plain algorithm (full run): {t_plain:8.2f} s")
        print(f"  ratio {t_plain / t_new:.1f}x; identical indices: {same}; identical "
              f"min distances: {np.array_equal(ref_mind, mind)}")
    return same


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=1_000)
    parser.add_argument("--plain-refs", type=int, default=0,
                        help="run the plain algorithm for this many references only (0: all)")
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}; numba kernels: "
          f"{'yes' if _maximin._kernels() is not None else 'no (numpy)'}")
    with threadpool_limits(1):
        small = np.random.default_rng(0).normal(size=(300, 100))
        first, _ = cpu_timed(rs_maximin, small, 100)
        print(f"first call (numba compile or cache load, 300 x 100 data): {first:.2f} s")
        X, path, seconds = au25_hydrogen_soap(args.n)
        print(f"SOAP of {args.n} Au25 H environments: "
              + (f"computed in {seconds:.1f} s, cached in {path}" if seconds
                 else f"from the cache {path}"))
        ok = compare("real: Au25 H SOAP", X, args.k, args.plain_refs, args.repeat)
        if not args.no_synthetic:
            n, d = 100_000, 1_000
            rng = np.random.default_rng(0)
            centres = rng.normal(size=(20, d)) * 3  # a few atom types in many environments
            S = centres[rng.integers(0, 20, size=n)] + rng.normal(size=(n, d))
            ok &= compare("synthetic: 20 clusters", S, 2_000, 200, 1)
    print(f"\nload average after: {os.getloadavg()}")
    print(f"oracle check (identical indices in every case): {ok}")


if __name__ == "__main__":
    main()
