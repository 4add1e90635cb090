"""Core-gold alignments (paper IV's triangle rule) per second, against the loop before.

    OMP_NUM_THREADS=1 python benchmarks/bench_gold_alignment.py [--n-inputs 100] [--k 2500]

Core-gold environments of the bundled Au25(SCH3)18⁻ MD (inputs from frames 500-599,
K references from frames 0-499, as ``bench_oamlm.py`` splits them) are aligned by
``GoldThiolateAlignment`` (``n_triangles=10``); like ``bench_oamlm.py`` the rate counts
10 triangles per (input, reference) pair. The reference is the same compiled loop with
each candidate's QCP rotation computed in turn (``_rotations_each_py``, the loop before
the candidates' Newton iterations were interleaved); both run in one process, best
CPU time of a few repeats. Printed: both rates, their ratio, and the largest
differences of R and g from the reference (the kernels do the same operations in the
same order: zero).
"""

import argparse
import time

import numpy as np

from mlmlearn.atoms import AtomicEnvironments
from mlmlearn.datasets import load_au25
from mlmlearn.oamlm import GoldThiolateAlignment
from mlmlearn.oamlm import _gold_thiolate as gold


def _best(fn, repeat):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
    return best, out


def _core(kernel, P, S, n_triangles=10):
    R = np.empty((len(P), len(S), 3, 3))
    g = np.empty((len(P), len(S)))
    kernel(np.ascontiguousarray(P.points), P.count, P.kind == gold.CORE_S,
           np.ascontiguousarray(S.points), S.count, S.kind == gold.CORE_S,
           n_triangles, R, g)
    return R, g


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-inputs", type=int, default=100)
    parser.add_argument("--k", type=int, default=2500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    frames = load_au25().frames
    alignment = GoldThiolateAlignment()
    rng = np.random.default_rng(0)
    P = alignment.neighborhoods(AtomicEnvironments(frames[500:], atom_types="Au_core"))
    S = alignment.neighborhoods(AtomicEnvironments(frames[:500], atom_types="Au_core"))
    P = P[np.sort(rng.choice(len(P), args.n_inputs, replace=False))]
    S = S[np.sort(rng.choice(len(S), args.k, replace=False))]
    new, old = gold._core_kernel(), gold._compile(batched=False)
    for kernel in (new, old):  # compiled (or loaded) before timing
        _core(kernel, P[:2], S[:2])
    t_new, (R, g) = _best(lambda: alignment.align(P, S), args.repeat)
    t_old, (R_old, g_old) = _best(lambda: _core(old, P, S), args.repeat)
    triangles = len(P) * len(S) * 10
    print(f"core gold, {len(P)} inputs x {len(S)} references "
          f"({np.mean(P.kind == gold.CORE_S):.0%} / {np.mean(S.kind == gold.CORE_S):.0%} "
          "with sulfur), 10 triangles per pair, one core")
    print(f"  GoldThiolateAlignment.align         {triangles / t_new / 1e6:6.2f} M triangles/s")
    print(f"  reference loop (one QCP at a time)  {triangles / t_old / 1e6:6.2f} M triangles/s")
    print(f"  ratio                               {t_old / t_new:6.2f}x")
    print(f"  max |R - R_reference|               {np.abs(R - R_old).max():.1e}")
    print(f"  max |g - g_reference|               {np.abs(g - g_old).max():.1e} Å")


if __name__ == "__main__":
    main()
