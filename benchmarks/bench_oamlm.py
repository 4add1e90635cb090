"""OAMLM speed per core: alignments/s per strategy, predictions/s at K = 2 500, time in alignment.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_oamlm.py [--k 2500]

Environments are Au25(SCH3)18⁻ frames (bundled, GFN1-xTB MD) for paper IV's rules per
atom type, and paper III's PermutationAlignment(4) on the same carbons and hydrogens. For each,
an OAMLM with K references (analytic loss, SOAP → MinMaxScaler) predicts 200 environments;
the table gives alignments/s (pairs × orderings tried; core gold counts triangles aligned),
predictions/s and the share of predict time spent aligning. The alternative to the
whole force model is the GFN1-xTB single point it replaces (≈ 11 s for Au25, printed from
tblite when installed). The alignment kernel alone, against a batched numpy SVD, is
``bench_superpose.py``.
"""

import argparse
import time

import numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from mlmlearn import OAMLM
from mlmlearn.atoms import SOAP, AtomicEnvironments
from mlmlearn.datasets import load_au25
from mlmlearn.oamlm import GoldThiolateAlignment, PermutationAlignment

CASES = [
    ("H", ["H"], GoldThiolateAlignment(), 2),
    ("C", ["C"], GoldThiolateAlignment(), 6),
    ("S", ["S"], GoldThiolateAlignment(), 2),
    ("Au unit", ["Au_unit", "Au_half_unit"], GoldThiolateAlignment(), 2),
    ("Au core", ["Au_core"], GoldThiolateAlignment(), 10),
    ("C", ["C"], PermutationAlignment(4), 24),
    ("H", ["H"], PermutationAlignment(4), 24),
]


class _TimedAlignment:
    """Wraps a strategy's ``align`` to add up its time."""

    def __init__(self, alignment):
        self.alignment, self.seconds = alignment, 0.0

    def __enter__(self):
        self.original = type(self.alignment).align

        def align(obj, P, S):
            t0 = time.perf_counter()
            out = self.original(obj, P, S)
            self.seconds += time.perf_counter() - t0
            return out

        type(self.alignment).align = align
        return self

    def __exit__(self, *exc):
        type(self.alignment).align = self.original


def xtb_seconds(atoms):
    try:
        from tblite.ase import TBLite
    except ImportError:
        return float("nan")
    atoms = atoms.copy()
    atoms.calc = TBLite(method="GFN1-xTB", charge=-1, verbosity=0)
    t0 = time.perf_counter()
    atoms.get_forces()
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=2500)
    parser.add_argument("--n-predict", type=int, default=200)
    parser.add_argument("--no-xtb", action="store_true")
    args = parser.parse_args(argv)
    frames = load_au25().frames
    train_frames, test_frames = frames[:500], frames[500:]
    descriptor = make_pipeline(SOAP(), MinMaxScaler())
    counts = AtomicEnvironments(frames[:1], atom_types=None)
    per_type = {
        t: int(np.sum(np.isin(counts.atom_types, types))) for t, types, *_ in CASES[:5]
    }
    print(f"K = {args.k} references, {args.n_predict} predictions per row, one core")
    print(f"{'type':8} {'strategy':22} {'orders':>6} {'align M/s':>10} {'pred/s':>8} "
          f"{'in align':>8} {'fit s':>6}")
    seconds_per_structure = {}
    for label, types, alignment, orders in CASES:
        train = AtomicEnvironments(train_frames, atom_types=types)
        k = min(args.k, len(train))
        rng = np.random.default_rng(0)
        train = train[np.sort(rng.choice(len(train), k, replace=False))]
        test = AtomicEnvironments(test_frames, atom_types=types)
        test = test[np.linspace(0, len(test) - 1, args.n_predict).astype(int)]
        model = OAMLM(descriptor, alignment=alignment, references="all", n_jobs=1)
        t0 = time.perf_counter()
        model.fit(train, train.forces)
        t_fit = time.perf_counter() - t0
        model.predict(test[:2])  # compiled kernels loaded
        with _TimedAlignment(alignment) as timer:
            t0 = time.perf_counter()
            model.predict(test)
            t_predict = time.perf_counter() - t0
        alignments = len(test) * model.n_references_ * orders
        rate = len(test) / t_predict
        name = type(alignment).__name__
        print(f"{label:8} {name:22} {orders:6d} {alignments / timer.seconds / 1e6:10.2f} "
              f"{rate:8.1f} {timer.seconds / t_predict:8.0%} {t_fit:6.0f}", flush=True)
        if name == "GoldThiolateAlignment":
            seconds_per_structure[label] = per_type[label] / rate
    total = sum(seconds_per_structure.values())
    parts = ", ".join(f"{t} {s:.2f}" for t, s in seconds_per_structure.items())
    print(f"Au25(SCH3)18 force directions, all {len(frames[0])} atoms at K = {args.k}: "
          f"{total:.1f} s on one core ({parts})")
    if not args.no_xtb:
        t_xtb = xtb_seconds(frames[-1])
        print(f"GFN1-xTB single point (tblite, same structure): {t_xtb:.1f} s "
              f"-> OAMLM/xTB time ratio {total / t_xtb:.2f}")


if __name__ == "__main__":
    main()
