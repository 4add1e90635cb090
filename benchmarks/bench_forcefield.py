"""One force call of the ML force field on Au25(SCH3)18⁻ against a GFN1-xTB single point.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
        python benchmarks/bench_forcefield.py [--k 2500] [--calls 5] [--no-xtb] [--tol 1e-3]

The force field is paper IV's (per atom type: SOAP → MinMaxScaler → EMLM for |F|, OAMLM with
GoldThiolateAlignment and the analytic loss for v̂; σ₂ = 0.25 Å for unit gold, 0.5 Å
elsewhere), with K references per type: K environments of each type drawn at random from the
bundled heating run (frames before the last 100) and all of them kept as references, as paper
IV keeps its RS-maximin training points. The structure is the run's last frame (115 atoms,
1500 K end, not trained on), displaced a little before each call so no cache answers.

Printed, with the load average before and after (other work on the machine inflates every
time):

1. the median wall time of a force call through ``MLMCalculator`` (forces and uncertainty);
2. where it goes, per atom type, each part timed on its own (best of 3): the direction
   model's descriptor (SOAP + scaling), its alignment neighbourhoods, the alignment, the
   descriptor distances to the K references, the K × K products of B_c and B_g, the
   rotation of the reference directions and the loss, and the whole norm model; the rest of
   the call (typing, neighbour lists, net-force removal, the calculator) is the difference;
3. a GFN1-xTB single point by tblite on one thread, and the ratio;
4. reference pruning, measured rather than assumed. The analytic loss weighs reference j by
   ω_j = exp(−(g_j/σ₂)²); a reference may be skipped unaligned when an upper bound of its
   weight is negligible. The bound used is rigorous and cheap: every rule puts the centre at
   the origin of both point sets and rotations keep norms, so |R s − p| ≥ ||s| − |p|| for
   each pair of corresponded points, which gives lb_j ≤ g_j for eq. (2.25) and (2.26)
   (minimised over the rule's orderings and blocks) and for core gold's (2.26) over
   nearest-neighbour distances (each point's nearest neighbour is at least the nearest radial
   gap away). Aligning the references in order of lb and stopping once
   Σ_skipped exp(−(lb/σ₂)²) ≤ tol · Σ_aligned ω bounds the skipped weight W_s ≤ tol · W_a,
   hence the direction change: with u = Σ_aligned ω d_c r (|r| = 1) and |d_c| ≤ d̄ over the
   skipped references, |Σ_skipped ω d_c r| ≤ d̄ W_s ≤ tol d̄ W_a, so
   sin θ ≤ tol · d̄ / ρ with ρ = |u| / W_a, the length of (2.32)'s un-normalised average
   (and the uncertainty Σ ω d_g / Σ ω moves by at most tol · max_skipped |d_g − U|).
   The table gives, per type: the median lb/g; the fraction of references this pruning would
   align at ``--tol``; the same with g itself as the bound (no bound can do better: this is
   the fraction of references holding 1 − tol of the weight); the measured direction change
   of the latter against all K and its bound; and the time that pruning could save at most.
   One line adds the earlier idea of ranking references by B_g's predicted misfit d_g.
"""

import argparse
import os
import time

import numpy as np
from _common import fit_on_random_environments

from mlmlearn._distances import euclidean_distances
from mlmlearn.atoms import AtomicEnvironments
from mlmlearn.datasets import load_au25
from mlmlearn.forcefield import (
    ForceField,
    MLMCalculator,
    default_direction_model,
    default_norm_model,
)
from mlmlearn.oamlm._gold_thiolate import _ORDERS, CORE, CORE_S, HALF, UNIT
from mlmlearn.oamlm._losses import analytic_direction
from mlmlearn.oamlm._oamlm import _predict_products

PAPER_IV_SIGMA2 = {"Au_unit": {"direction__sigma2": 0.25}}


def train(k, seed=0):
    data = load_au25()
    frames = data.frames[:-100]
    ff = ForceField(default_norm_model(references="all"),
                    default_direction_model(references="all"),
                    type_params=PAPER_IV_SIGMA2)
    ff, seconds = fit_on_random_environments(ff, frames, k, seed)
    return ff, seconds, data.frames[-1]


def force_calls(calc, atoms, calls, seed=1):
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(calls):
        moved = atoms.copy()
        moved.positions += rng.normal(scale=0.01, size=moved.positions.shape)
        moved.calc = calc
        t0 = time.perf_counter()
        moved.get_forces()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.min(times))


def best_of(function, repeats=3):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = function()
        times.append(time.perf_counter() - t0)
    return out, min(times)


def split(ff, atoms):
    """Per atom type: seconds of each part of the force call, and the pieces for pruning."""
    env = AtomicEnvironments(atoms)
    labels = ff._labels(env)
    parts, pieces = {}, {}
    for t in ff.types_:
        parts[t], pieces[t] = _type_parts(ff, t, env[np.flatnonzero(labels == t)])
    return parts, pieces


def _type_parts(ff, t, sub):
    m = ff.direction_models_[t]
    S, T = m.reference_neighborhoods_, m.reference_directions_
    norms = getattr(m, "_reference_sq_norms_", None)
    F, t_desc = best_of(lambda: m._features(sub))
    P, t_nbh = best_of(lambda: m.alignment_.neighborhoods(sub))
    (R, g), t_align = best_of(lambda: m.alignment_.align(P, S))
    D, t_dist = best_of(lambda: euclidean_distances(F, m.references_, Y_norm_squared=norms))
    (d_c, d_g), t_b = best_of(lambda: (D @ m.coef_c_ + m.intercept_c_,
                                       D @ m.coef_g_ + m.intercept_g_))

    class Aligned:  # the alignment above, handed to the rotation step as it is
        def align(self, P, S):
            return R, g

    def rotate_and_loss():
        rotated, _ = _predict_products(Aligned(), P, S, T)
        e = (g / m.sigma2) ** 2
        omega = np.exp(-(e - e.min(axis=1, keepdims=True)))
        return rotated, omega, analytic_direction(omega, d_c, rotated)

    (rotated, omega, v), t_loss = best_of(rotate_and_loss)
    _, t_norm = best_of(lambda: ff.norm_models_[t].predict(sub))
    parts = {"n": len(sub), "descriptor": t_desc, "neighbourhoods": t_nbh,
             "alignment": t_align, "distances": t_dist, "B_c, B_g": t_b,
             "rotation + loss": t_loss, "norm model": t_norm}
    piece = dict(P=P, S=S, g=g, d_c=d_c, d_g=d_g, rotated=rotated, omega=omega, v=v,
                 sigma2=m.sigma2, alignment=m.alignment_)
    return parts, piece


# ------------------------------------------------------------- radial lower bounds of g
def _radii(N):
    return np.linalg.norm(N.points, axis=2)


def radial_lower_bound(alignment, P, S):
    """lb (n, K) ≤ g of GoldThiolateAlignment.align, from norms alone (see the docstring)."""
    rP, rS = _radii(P), _radii(S)
    kinds = set(np.unique(P.kind)) | set(np.unique(S.kind))
    if kinds & {CORE, CORE_S}:
        return _core_lower_bound(P, S, rP, rS)
    rss = alignment.accuracy == "rss"

    def accuracy(gaps, n_points):  # (2.25) or (2.26) of the radial gaps
        return (np.sqrt((gaps**2).sum(-1)) if rss else gaps.sum(-1)) / n_points

    lb = np.full((len(P), len(S)), np.inf)
    if kinds & {UNIT, HALF}:
        blocks = {UNIT: [(0, 1, 2, 3), (0, 4, 5, 6)], HALF: [(0, 1, 2, 3)]}
        for a in (UNIT, HALF):
            for b in (UNIT, HALF):
                rows, cols = np.flatnonzero(P.kind == a), np.flatnonzero(S.kind == b)
                if not (rows.size and cols.size):
                    continue
                if a == b == UNIT:  # the whole set, both block orders
                    pairs = [(list(range(7)), list(o)) for o in _ORDERS[UNIT]]
                    n_points = 7
                else:  # block against block
                    pairs = [(list(x), list(y)) for x in blocks[a] for y in blocks[b]]
                    n_points = 4
                sub = np.full((rows.size, cols.size), np.inf)
                for x, y in pairs:
                    gaps = np.abs(rP[rows][:, None, x] - rS[cols][None, :, y])
                    sub = np.minimum(sub, accuracy(gaps, n_points))
                lb[np.ix_(rows, cols)] = sub
        return lb
    (kind,) = kinds
    n_points = int(P.count[0])
    for o in _ORDERS[kind]:
        gaps = np.abs(rP[:, None, :n_points] - rS[None, :, o])
        lb = np.minimum(lb, accuracy(gaps, n_points))
    return lb


def _core_lower_bound(P, S, rP, rS):
    """Core gold: each point of the larger set is at least its nearest radial gap from
    every point of the other set, whatever the rotation."""
    used_p = np.arange(13)[None, 1:] < P.count[:, None]  # (n, 12) points in use
    used_s = np.arange(13)[None, 1:] < S.count[:, None]  # (K, 12)
    far = 1e6  # Å: a padded point is nobody's nearest, and is left out of the sums
    a = np.where(used_p, rP[:, 1:], far)[:, None, :, None]
    b = np.where(used_s, rS[:, 1:], -far)[None, :, None, :]
    gaps = np.abs(a - b)  # (n, K, input point, reference point)
    per_ref = np.where(used_s[None], gaps.min(axis=2), 0.0) ** 2  # nearest input of each
    per_input = np.where(used_p[:, None], gaps.min(axis=3), 0.0) ** 2  # nearest reference
    x_big = S.count[None, :] >= P.count[:, None]  # the reference's set is the larger
    total = np.where(x_big, per_ref.sum(axis=2), per_input.sum(axis=2))
    return np.sqrt(total) / np.maximum(S.count[None, :], P.count[:, None])


# ------------------------------------------------------------------------------ pruning
def _angles(a, b):
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=1), np.sum(a * b, axis=1)))


def prune(piece, bound, tol):
    """Align in order of ``bound``; stop once the bounded rest weighs ≤ tol × the aligned.

    Returns the fraction aligned per row, the direction (analytic loss) over the aligned
    references and the a-priori angle bound arcsin(tol · d̄ / ρ) per row (degrees).
    """
    g, s, omega = piece["g"], piece["sigma2"], piece["omega"]
    n, k = g.shape
    e_min = ((g / s) ** 2).min(axis=1, keepdims=True)  # the scale of omega
    upper = np.exp(-((bound / s) ** 2) + e_min)  # ≥ ω, on the same scale
    order = np.argsort(bound, axis=1, kind="stable")
    up = np.take_along_axis(upper, order, axis=1)
    w = np.take_along_axis(omega, order, axis=1)
    rest = np.cumsum(up[:, ::-1], axis=1)[:, ::-1]  # rest[:, m] = Σ over positions ≥ m
    kept_w = np.cumsum(w, axis=1)
    stop = np.append(rest[:, 1:], np.zeros((n, 1)), axis=1) <= tol * kept_w
    count = stop.argmax(axis=1) + 1  # the first prefix that satisfies the rule
    mask = np.zeros((n, k), dtype=bool)
    for i in range(n):
        mask[i, order[i, : count[i]]] = True
    w_kept = np.where(mask, omega, 0.0)
    v = analytic_direction(w_kept, piece["d_c"], piece["rotated"])
    u = np.einsum("nk,nk,nki->ni", w_kept, piece["d_c"], piece["rotated"])
    rho = np.linalg.norm(u, axis=1) / w_kept.sum(axis=1)
    d_bar = np.where(mask, 0.0, np.abs(piece["d_c"])).max(axis=1)
    bound_deg = np.degrees(np.arcsin(np.minimum(1.0, tol * d_bar / rho)))
    return count / k, v, bound_deg


def pruning_table(pieces, parts, tol):
    rows = []
    for t, piece in pieces.items():
        lb = radial_lower_bound(piece["alignment"], piece["P"], piece["S"])
        g = piece["g"]
        # rounding: g comes from rotations orthogonal to ~1e-15 applied to points ≤ 5 Å
        assert np.all(lb <= g + 1e-12), f"{t}: the radial bound exceeds g by {(lb - g).max()}"
        frac_lb, v_lb, _ = prune(piece, lb, tol)
        frac_g, v_g, bound = prune(piece, g, tol)
        change_lb = _angles(v_lb, piece["v"])
        change_g = _angles(v_g, piece["v"])
        saving = (1 - frac_lb.mean()) * parts[t]["alignment"]
        rows.append((t, piece["sigma2"], float(np.median(lb / g)), float(frac_lb.mean()),
                     float(change_lb.max()), float(frac_g.mean()), float(np.median(change_g)),
                     float(change_g.max()), float(bound.max()), saving))
    return rows


def misfit_filter(pieces, keep=0.5):
    """Direction change when only the references of smallest predicted misfit d_g align."""
    changes = []
    for piece in pieces.values():
        d_g, omega = piece["d_g"], piece["omega"]
        m = max(1, int(round(keep * d_g.shape[1])))
        mask = np.zeros_like(omega, dtype=bool)
        np.put_along_axis(mask, np.argsort(d_g, axis=1)[:, :m], True, axis=1)
        v = analytic_direction(np.where(mask, omega, 0.0), piece["d_c"], piece["rotated"])
        changes.append(_angles(v, piece["v"]))
    changes = np.concatenate(changes)
    return float(np.median(changes)), float(changes.max())


def xtb_single_point(atoms):
    from tblite.ase import TBLite

    a = atoms.copy()
    a.calc = TBLite(method="GFN1-xTB", charge=-1, verbosity=0)
    t0 = time.perf_counter()
    a.get_forces()
    return time.perf_counter() - t0


def load():
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=2500, help="references per atom type")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--no-xtb", action="store_true", help="skip the GFN1-xTB single point")
    parser.add_argument("--tol", type=float, default=1e-3,
                        help="pruning: skipped weight at most tol x the aligned weight")
    args = parser.parse_args(argv)

    print(f"start: {load()}")
    ff, fit_seconds, atoms = train(args.k)
    print(f"force field: K = {args.k} per type, fitted in {fit_seconds:.0f} s; "
          f"types {ff.types_} ({ff.n_samples_})")
    calc = MLMCalculator(ff)
    force_calls(calc, atoms, 2)  # compile and warm up
    print(f"timing: {load()}")
    ml, ml_best = force_calls(calc, atoms, args.calls)
    print(f"\nML force call, Au25(SCH3)18 ({len(atoms)} atoms): {ml * 1e3:.0f} ms median of "
          f"{args.calls}, best {ml_best * 1e3:.0f} ms ({ml / len(atoms) * 1e3:.2f} ms per atom)")

    moved = atoms.copy()
    moved.positions += 0.005
    parts, pieces = split(ff, moved)
    names = list(next(iter(parts.values())))[1:]
    print("  where it goes, per atom type (ms, each part best of 3):")
    print(f"    {'type':8s} {'n':>4s} " + " ".join(f"{c:>15s}" for c in names))
    totals = dict.fromkeys(names, 0.0)
    for t, p in parts.items():
        print(f"    {t:8s} {p['n']:4d} " + " ".join(f"{p[c] * 1e3:15.1f}" for c in names))
        for c in names:
            totals[c] += p[c]
    print(f"    {'all':8s} {len(atoms):4d} " + " ".join(f"{totals[c] * 1e3:15.1f}"
                                                       for c in names))
    summed = sum(totals.values())
    print(f"    the rest (typing, neighbour lists, input validation, net-force removal, "
          f"calculator; best call minus the parts): {(ml_best - summed) * 1e3:.0f} ms; "
          f"alignment {100 * totals['alignment'] / ml_best:.0f} % of the best call")
    print(f"after timing: {load()}")

    if not args.no_xtb:
        xtb = xtb_single_point(atoms)
        print(f"\nGFN1-xTB single point (tblite, one thread): {xtb:.1f} s")
        print(f"ratio xTB / ML force call: {xtb / ml:.0f}x (target >= 100x); with the "
              f"alignment free: {xtb / (ml - totals['alignment']):.0f}x")

    print(f"\nreference pruning at tol = {args.tol:g} (skipped weight <= tol x aligned; "
          "fractions are means over the type's atoms):")
    print(f"  {'type':8s} {'sigma2':>6s} {'lb/g':>5s} {'aligned':>8s} {'max':>6s}   "
          f"{'oracle':>7s} {'median':>7s} {'max':>6s} {'bound':>6s}   {'saving':>7s}")
    print(f"  {'':8s} {'A':>6s} {'med.':>5s} {'radial lb':>8s} {'deg':>6s}   "
          f"{'aligned':>7s} {'deg':>7s} {'deg':>6s} {'deg':>6s}   {'ms':>7s}")
    for t, s, ratio, f_lb, c_lb, f_g, med, worst, bound, saving in pruning_table(
            pieces, parts, args.tol):
        print(f"  {t:8s} {s:6.2f} {ratio:5.2f} {f_lb:8.1%} {c_lb:6.3f}   "
              f"{f_g:7.1%} {med:7.4f} {worst:6.3f} {bound:6.2f}   {saving * 1e3:7.1f}")
    med, worst = misfit_filter(pieces)
    print(f"  aligning the half of smallest predicted misfit d_g instead: direction change "
          f"median {med:.1f}, max {worst:.1f} deg (a poor filter)")
    print(f"end: {load()}")


if __name__ == "__main__":
    main()
