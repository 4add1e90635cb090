"""Core-gold alignments (paper IV's triangle rule) per second, against the loop before.

    OMP_NUM_THREADS=1 python benchmarks/bench_gold_alignment.py [--n-inputs 100] [--k 2500]

Core-gold environments of the bundled Au25(SCH3)18⁻ MD (inputs from frames 500-599,
K references from frames 0-499, as ``bench_oamlm.py`` splits them) are aligned by
``GoldThiolateAlignment`` (``n_triangles=10``); like ``bench_oamlm.py`` the rate counts
10 triangles per (input, reference) pair. The references are the same compiled
loop with the nearest-neighbour sums in the plain order (``_nn_accuracy_py``, the loop
before their stopping test went to the outer points first) and, besides, with each
candidate's QCP rotation computed in turn (``_rotations_each_py``, the loop before the
candidates' Newton iterations were interleaved); all run in one process, best CPU time
of a few repeats. Printed: the rates, the ratios, and the largest differences of R and
g from each reference (the kernels compute every distance, sum and rotation alike and
decide alike: zero).
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
    references = {
        "loop before outer-first (batched QCP)": gold._compile(batched=True, outer=False),
        "loop before both (one QCP at a time)": gold._compile(batched=False, outer=False),
    }
    for kernel in (gold._core_kernel(), *references.values()):  # compiled before timing
        _core(kernel, P[:2], S[:2])
    triangles = len(P) * len(S) * 10
    print(f"core gold, {len(P)} inputs x {len(S)} references "
          f"({np.mean(P.kind == gold.CORE_S):.0%} / {np.mean(S.kind == gold.CORE_S):.0%} "
          "with sulfur), 10 triangles per pair, one core")
    t_new, (R, g) = _best(lambda: alignment.align(P, S), args.repeat)
    print(f"  GoldThiolateAlignment.align           {triangles / t_new / 1e6:6.2f} M triangles/s")
    for name, kernel in references.items():
        t_old, (R_old, g_old) = _best(lambda kernel=kernel: _core(kernel, P, S), args.repeat)
        print(f"  {name:37s} {triangles / t_old / 1e6:6.2f} M triangles/s, ratio "
              f"{t_old / t_new:4.2f}x, max |R - R_ref| {np.abs(R - R_old).max():.1e}, "
              f"max |g - g_ref| {np.abs(g - g_old).max():.1e} Å")


if __name__ == "__main__":
    main()
