"""OAMLM speed per core: alignments/s per strategy, predictions/s at K = 2 500, time in alignment;
the numeric loss (2.29): the compiled Newton solver against per-environment SLSQP.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_oamlm.py [--k 2500]
    python benchmarks/bench_oamlm.py --numeric-only [--numeric-k 1000 --n-numeric 5400]
        [--n-slsqp 5400 --restarts 0,1,2,4,8]

Environments are Au25(SCH3)18⁻ frames (bundled, GFN1-xTB MD) for paper IV's rules per
atom type, and paper III's PermutationAlignment(4) on the same carbons and hydrogens. For each,
an OAMLM with K references (analytic loss, SOAP → MinMaxScaler) predicts 200 environments;
the table gives alignments/s (pairs × orderings tried; core gold counts triangles aligned),
predictions/s and the share of predict time spent aligning. The alternative to the
whole force model is the GFN1-xTB single point it replaces (≈ 11 s for Au25, printed from
tblite when installed). The alignment kernel alone, against a batched numpy SVD, is
``bench_superpose.py``.

The numeric-loss section fits an OAMLM (loss="numeric", nearest-neighbour start) on K Au25
hydrogen environments (all of them references, GoldThiolateAlignment) and captures the inputs
of (2.29) for the 5 400 hydrogens of the held-out frames, then solves them twice: over the
references that pass paper III's filter g ≤ d_g, and over all references (paper IV). It runs
paper III's SLSQP loop (``solver="slsqp"``) on all of them (``--n-slsqp``: an evenly spaced
subset, the time extrapolated per environment), then for each number of further starts
(``--restarts``, ``numeric_restarts``) times the compiled Newton solver on all environments
(CPU time, best of 3, one BLAS thread) and compares it with SLSQP: the time ratio, in how many
environments J(newton) is higher or lower than J(slsqp) beyond both evaluations' rounding,
and the mean and largest J(newton) − J(slsqp). Where it is higher, SLSQP has ended in a well
(it leaves the sphere on its way) that none of the starts leads to, and the Newton answer is
checked to be a local minimum no higher than the start.
"""

import argparse
import time
from contextlib import contextmanager

import numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from mlmlearn import OAMLM
from mlmlearn.atoms import SOAP, AtomicEnvironments
from mlmlearn.datasets import load_au25
from mlmlearn.oamlm import GoldThiolateAlignment, PermutationAlignment
from mlmlearn.oamlm import _oamlm as oamlm_module
from mlmlearn.oamlm._losses import RESTARTS, numeric_direction, numeric_hessian, numeric_loss

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


@contextmanager
def _captured_numeric_inputs():
    """Record the inputs OAMLM.predict hands to the numeric loss (returns dummies)."""
    captured = []

    def capture(d_c, g, rotated, sigma1, sigma2, start, *, mask=None, **kwargs):
        captured.append((d_c, g, rotated, start, mask))
        return np.tile([0.0, 0.0, 1.0], (len(d_c), 1))

    original = oamlm_module.numeric_direction
    oamlm_module.numeric_direction = capture
    try:
        yield captured
    finally:
        oamlm_module.numeric_direction = original


def numeric_loss_section(frames, k, n_envs, n_slsqp, restarts_list=(0, 1, 2, 4, 8)):
    s1, s2 = 0.25, 0.5
    train = AtomicEnvironments(frames[:500], atom_types=["H"])
    rng = np.random.default_rng(0)
    train = train[np.sort(rng.choice(len(train), min(k, len(train)), replace=False))]
    test = AtomicEnvironments(frames[500:], atom_types=["H"])
    test = test[np.linspace(0, len(test) - 1, min(n_envs, len(test))).astype(int)]
    model = OAMLM(make_pipeline(SOAP(), MinMaxScaler()), alignment=GoldThiolateAlignment(),
                  references="all", loss="numeric", sigma1=s1, sigma2=s2, n_jobs=1)
    model.fit(train, train.forces)
    with _captured_numeric_inputs() as captured:
        model.predict(test)
    d, g, r, start, mask = (np.concatenate(parts) for parts in zip(*captured, strict=True))
    print(f"\nnumeric loss (2.29), Au25 hydrogens, K = {model.n_references_}, {len(d)} "
          "environments, nearest-neighbour starts, one core")
    for label, keep in (("paper III's filter g <= d_g", mask),
                        ("all references (paper IV)", np.ones_like(mask))):
        _compare_solvers(label, d, g, r, start, keep, s1, s2, n_slsqp, restarts_list)


def _compare_solvers(label, d, g, r, start, mask, s1, s2, n_slsqp, restarts_list):
    from threadpoolctl import threadpool_limits

    n = len(d)
    sub = np.linspace(0, n - 1, min(n_slsqp, n)).astype(int)
    with threadpool_limits(1):
        t0 = time.process_time()
        v_slsqp = numeric_direction(d[sub], g[sub], r[sub], s1, s2, start[sub], mask=mask[sub],
                                    solver="slsqp")
        t_slsqp = (time.process_time() - t0) / len(sub) * n
    print(f" {label}: references kept per environment, mean {mask.sum(axis=1).mean():.0f}")
    scale = np.mean([abs(numeric_loss(v_slsqp[row], d[i, mask[i]], g[i, mask[i]],
                                      r[i, mask[i]], s1, s2)[0]) for row, i in enumerate(sub)])
    print(f"  SLSQP loop: {t_slsqp:.2f} s (measured on {len(sub)} environments, extrapolated "
          f"to {n}; mean |J| {scale:.3g}); compiled Newton, CPU time best of 3, against it "
          f"on the {len(sub)}:")
    print(f"  {'restarts':>8} {'Newton s':>9} {'ratio':>7} {'higher':>8} {'lower':>8} "
          f"{'mean dJ':>9} {'max dJ':>9} {'certified':>9}")
    eps = np.finfo(float).eps
    for restarts in restarts_list:
        with threadpool_limits(1):
            numeric_direction(d[:2], g[:2], r[:2], s1, s2, start[:2], mask=mask[:2],
                              restarts=restarts)  # compiled
            t_newton = float("inf")
            for _ in range(3):
                t0 = time.process_time()
                v = numeric_direction(d, g, r, s1, s2, start, mask=mask, restarts=restarts)
                t_newton = min(t_newton, time.process_time() - t0)
        diff, higher, lower, certified = [], 0, 0, 0
        for row, i in enumerate(sub):
            m = mask[i]
            args = (d[i, m], g[i, m], r[i, m], s1, s2)
            j_newton, grad = numeric_loss(v[i], *args)
            j_slsqp = numeric_loss(v_slsqp[row], *args)[0]
            diff.append(j_newton - j_slsqp)
            # both evaluations' rounding: (k + 8) ε Σ w each, Σ w = |J|
            rounding = (m.sum() + 8) * eps * (abs(j_newton) + abs(j_slsqp))
            lower += j_newton < j_slsqp - rounding
            if j_newton <= j_slsqp + rounding:
                continue
            higher += 1  # SLSQP ended in a well none of the starts leads to
            basis = np.linalg.svd(np.eye(3) - np.outer(v[i], v[i]))[0][:, :2]
            hess = basis.T @ numeric_hessian(v[i], *args) @ basis - (v[i] @ grad) * np.eye(2)
            v0 = start[i] / np.linalg.norm(start[i])
            certified += bool(np.linalg.eigvalsh(hess)[0] > 0
                              and j_newton <= numeric_loss(v0, *args)[0])
        diff = np.array(diff)
        mark = " (default)" if restarts == RESTARTS else ""
        print(f"  {restarts:8d} {t_newton:9.3f} {t_slsqp / t_newton:6.1f}x {higher:8d} "
              f"{lower:8d} {diff.mean():9.3g} {diff.max():9.3g} {certified:5d}/{higher}{mark}",
              flush=True)
    print("  higher/lower: J(newton) above/below J(slsqp) beyond both evaluations' rounding; "
          "certified: of the higher, local minima no higher than the start")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=2500)
    parser.add_argument("--n-predict", type=int, default=200)
    parser.add_argument("--no-xtb", action="store_true")
    parser.add_argument("--numeric-only", action="store_true",
                        help="only the numeric-loss section")
    parser.add_argument("--numeric-k", type=int, default=1000)
    parser.add_argument("--n-numeric", type=int, default=5400,
                        help="environments of the numeric-loss section (Au25 hydrogens)")
    parser.add_argument("--n-slsqp", type=int, default=5400,
                        help="of them, solved by the SLSQP loop (time extrapolated)")
    parser.add_argument("--restarts", default="0,1,2,4,8",
                        help="the numeric solver's further starts to compare, comma-separated")
    args = parser.parse_args(argv)
    restarts = [int(x) for x in args.restarts.split(",")]
    frames = load_au25().frames
    if args.numeric_only:
        numeric_loss_section(frames, args.numeric_k, args.n_numeric, args.n_slsqp, restarts)
        return
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
    numeric_loss_section(frames, args.numeric_k, args.n_numeric, args.n_slsqp, restarts)


if __name__ == "__main__":
    main()
