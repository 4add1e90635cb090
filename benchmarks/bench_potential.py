"""One energy + forces call of EMLMPotential against GFN-xTB single points; its SOAP derivatives.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
        python benchmarks/bench_potential.py [--repeat 5] [--no-xtb]

Two systems: an Au5(SCH3)5 ring (30 atoms; a frame of the 600 K run of
``load_gold_thiolate_rings``) and Au25(SCH3)18⁻ (115 atoms; a frame of ``load_au25``). For
each, a small potential is fitted on a few dozen frames of the same run (every 5th ring
frame, every 20th Au25 frame; ``n_references=100``, force rows from 10 structures) with the
isolated-atom energies of GFN2-xTB as fixed offsets — for Au25, whose data are GFN1-xTB, they
are placeholders only (the offsets do not change the cost of a call). The timed structure is a
frame the potential was not fitted on, displaced by 1e-3 Å before every call so nothing is
cached. Every time is the median of ``--repeat`` calls, everything on one thread (BLAS, OpenMP,
numba), with the load average printed beside it: another process shares the two cores, and load
inflates every time.

Rows:

1. SOAP derivatives: dscribe's dense analytic array (``SOAP.derivatives``, attach=True);
   dscribe on local sub-systems (each centre with the atoms within r_cut + padding, centre
   first, ``centers=[[0]]``, one call with the list of systems — the alternative measured and
   not kept: dscribe's scalar contraction costs the same per pair, so it saves little);
   ``SOAP.sparse_derivatives`` (this package's kernels, pairs within the cutoff only).
2. ``EMLMPotential.energies_forces`` (forces through ``SOAP.pullback``, which contracts ∂E/∂X
   through the expansion coefficients without forming ∂X/∂r) and ``forces_from_sparse`` below
   (the same energy and forces contracted from the sparse derivatives), checked equal to
   1e-10 relative before timing and both against central differences of the energy on two
   coordinates; and the repulsive baseline's own ``energy_forces`` (part of every call).
3. The force-row design of one structure (``EMLMPotential._force_design``, from the sparse
   derivatives: what ``fit`` pays per structure).
4. GFN1-xTB single points by tblite on one thread (``charge=-1`` for Au25): cold (a new
   calculator per call, as a single point) and warm (the same calculator after a 1e-3 Å
   displacement, which restarts from the previous wavefunction, as in an optimisation or MD);
   GFN2-xTB for the ring. Ratios are xTB time over the potential's time.

5. The energy jump when one atom crosses ``r_cut + padding`` of another (the first 30 pairs of
   the timed frame with a distance within 0.3 Å below it, the atom moved along the pair axis
   to one ulp inside and outside): dscribe's GTO SOAP has no smooth cutoff, so the potential
   does not either; a potential on SOAP with ``weighting={"function": "poly", "r0": r_cut +
   padding, "c": 1, "m": 2}`` for comparison, fitted on energies only (``force_structures=0``:
   its force rows would need the dense ``SOAP.derivatives``, which dscribe refuses with a
   weighting; ``sparse_derivatives`` has them).

Output: printed and written to ``benchmarks/results/bench_potential.txt``.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.linalg import LinAlgWarning  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from mlmlearn.datasets import load_au25, load_gold_thiolate_rings  # noqa: E402
from mlmlearn.forcefield import EMLMPotential, default_descriptor  # noqa: E402

#: GFN2-xTB isolated-atom energies (eV), placeholders for the GFN1-xTB Au25 data.
OFFSETS = {"H": -10.707, "C": -48.847, "S": -85.669, "Au": -103.475}
RESULTS = Path(__file__).resolve().parent / "results" / "bench_potential.txt"


# ------------------------------------------------------------------ the sparse contractions
def forces_from_sparse(pot, atoms):
    """``EMLMPotential.energies_forces``, forces contracted from ``SOAP.sparse_derivatives``.

    ``F_j = −Σ_p [atom_p = j] dX_p · ∂E/∂X_{centre_p}``, with ``∂E/∂X`` the potential's own
    (:meth:`EMLMPotential._energy_gradient`): the alternative to ``SOAP.pullback``.

    Returns
    -------
    energies : ndarray of shape (n_atoms,)
    forces : ndarray of shape (n_atoms, 3)
    """
    pot._check_structure(atoms, 0)
    symbols = np.asarray(atoms.get_chemical_symbols())
    n = len(atoms)
    P, centre, atom, dP = pot.descriptor_.sparse_derivatives(atoms)
    e, grad = pot._energy_gradient(P, symbols)
    # per pair and direction: dX_p · grad_{centre_p}
    along = np.einsum("paf,pf->pa", dP, grad[centre])
    F = -np.stack([np.bincount(atom, weights=along[:, a], minlength=n) for a in range(3)],
                  axis=1)
    if pot.repulsion_ is not None:
        e_rep, f_rep = pot.repulsion_.energy_forces(atoms)
        e += e_rep
        F += f_rep
    return e, F


def energy_differences(pot, atoms, coordinates, h=1e-3):
    """−∂E/∂r by central differences at h and h/2, Richardson-extrapolated."""
    def energy(j, a, d):
        b = atoms.copy()
        b.positions[j, a] += d
        return pot.energies_forces(b, forces=False)[0].sum()

    out = []
    for j, a in coordinates:
        d1 = (energy(j, a, h) - energy(j, a, -h)) / (2 * h)
        d2 = (energy(j, a, h / 2) - energy(j, a, -h / 2)) / h
        out.append(-(4 * d2 - d1) / 3)
    return np.array(out)


# ------------------------------------------------------------------ the measured alternative
def subsystem_derivatives(soap, atoms):
    """dscribe's analytic derivatives, each centre in the sub-system of its neighbours.

    Returns ``(X, centre, atom, dX)`` as ``SOAP.sparse_derivatives`` (pairs
    unsorted within a centre: the centre first, then its neighbours).
    """
    from mlmlearn.atoms._soap_gradient import gto_constants, neighbour_pairs

    constants = gto_constants(float(soap.r_cut), soap.n_max, soap.l_max, float(soap.sigma))
    i, j, _ = neighbour_pairs(atoms.positions, constants["cutoff"])
    n = len(atoms)
    starts = np.searchsorted(i, np.arange(n + 1))
    members = [np.concatenate([[c], j[starts[c]:starts[c + 1]]]) for c in range(n)]
    systems = [atoms[m] for m in members]
    d, X = soap.descriptor_.derivatives(systems, centers=[[0]] * n, attach=True,
                                        method="analytical", return_descriptor=True)
    dX = np.concatenate([np.asarray(x).reshape(len(m), 3, -1) for x, m in zip(d, members,
                                                                               strict=True)])
    X = np.concatenate([np.asarray(x).reshape(1, -1) for x in X])
    centre = np.concatenate([np.full(len(m), c) for c, m in enumerate(members)])
    return X, centre, np.concatenate(members), dX


def cutoff_jumps(pot, atoms, max_pairs=30):
    """|ΔE| (eV) when one atom of a pair crosses r_cut + padding, for up to ``max_pairs`` pairs."""
    from mlmlearn.atoms._soap_gradient import gto_constants

    soap = pot.descriptor_
    cut = gto_constants(float(soap.r_cut), soap.n_max, soap.l_max, float(soap.sigma))["cutoff"]
    D = atoms.get_all_distances()
    jumps = []
    for i, j in zip(*np.nonzero((D > cut - 0.3) & (D < cut)), strict=True):
        if i > j:
            continue
        u = (atoms.positions[j] - atoms.positions[i]) / D[i, j]
        energies = []
        for d in (np.nextafter(cut, 0), np.nextafter(cut, np.inf)):
            b = atoms.copy()
            b.positions[j] = atoms.positions[i] + u * d
            energies.append(pot.predict(b)[0])
        jumps.append(abs(energies[1] - energies[0]))
        if len(jumps) == max_pairs:
            break
    return np.array(jumps)


# ------------------------------------------------------------------ timing
def load():
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def median_time(fn, atoms, repeat, seed=0):
    """Median wall time (s) of ``fn(displaced atoms)`` and the load average after."""
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(repeat):
        a = atoms.copy()
        a.positions += rng.normal(scale=1e-3, size=a.positions.shape)
        t0 = time.perf_counter()
        fn(a)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), load()


def xtb_times(atoms, method, charge, repeat):
    from tblite.ase import TBLite

    def cold(a):
        a.calc = TBLite(method=method, charge=charge, verbosity=0)
        return a.get_forces()

    warm_calc = TBLite(method=method, charge=charge, verbosity=0)
    w = atoms.copy()
    w.calc = warm_calc
    w.get_forces()  # the first call is cold

    def warm(a):
        w.positions = a.positions
        return w.get_forces()

    return median_time(cold, atoms, repeat), median_time(warm, atoms, repeat, seed=1)


def relative(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def systems():
    rings = load_gold_thiolate_rings()
    run = rings.run_names.index("Au5(SCH3)5_600K")
    ring_frames = [f for f, r in zip(rings.frames, rings.run, strict=True) if r == run]
    au25 = load_au25().frames
    return [
        ("Au5(SCH3)5 ring", ring_frames[::5], ring_frames[-3], 0, ["GFN2-xTB", "GFN1-xTB"]),
        ("Au25(SCH3)18-", au25[::20], au25[-7], -1, ["GFN1-xTB"]),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-xtb", action="store_true")
    args = parser.parse_args()
    lines = []

    def out(text=""):
        print(text, flush=True)
        lines.append(text)

    out(f"bench_potential: median of {args.repeat} calls, one thread; {load()} at start")
    with threadpool_limits(1):
        for name, train, atoms, charge, methods in systems():
            t0 = time.perf_counter()
            pot = EMLMPotential(n_references=100, atomic_energies=OFFSETS, force_structures=10,
                                random_state=0).fit(train)
            fit_time = time.perf_counter() - t0
            soap = pot.descriptor_
            X, centre, atom, dX = soap.sparse_derivatives(atoms)  # compiles numba once
            n, F = X.shape
            out()
            out(f"{name}: {n} atoms, {F} features, {len(centre)} of {n * n} (centre, atom) "
                f"pairs within the cutoff ({len(centre) / n**2:.0%}); fitted on {len(train)} "
                f"frames in {fit_time:.1f} s")
            # equalities before timing
            e_ref, f_ref = pot.energies_forces(atoms)
            e_sp, f_sp = forces_from_sparse(pot, atoms)
            coords = [(0, 0), (n // 2, 2)]
            fd = energy_differences(pot, atoms, coords)
            fd_err = {name: np.abs(np.array([f[j, a] for j, a in coords]) - fd).max()
                      for name, f in [("pullback", f_ref), ("sparse", f_sp)]}
            X_sub, c_sub, a_sub, d_sub = subsystem_derivatives(soap, atoms)
            _, dense = soap.derivatives(atoms)
            out(f"  checks: forces_from_sparse vs energies_forces (pullback): energies "
                f"{relative(e_sp, e_ref):.1e}, forces {relative(f_sp, f_ref):.1e}; "
                f"sub-systems vs dense {relative(d_sub, dense[c_sub, a_sub]):.1e} (relative "
                "to the largest entry); central differences of E (Richardson, h = 1e-3 Å) "
                "minus the force, eV/Å: " + ", ".join(f"{k} {v:.1e}" for k, v in fd_err.items()))
            assert relative(e_sp, e_ref) <= 1e-10 and relative(f_sp, f_ref) <= 1e-10
            del dense
            rows = [
                ("SOAP derivatives, dscribe dense", soap.derivatives),
                ("SOAP derivatives, dscribe sub-systems",
                 functools.partial(subsystem_derivatives, soap)),
                ("SOAP.sparse_derivatives", soap.sparse_derivatives),
                ("SOAP.pullback (rows and expansion)", soap.pullback),
                ("energies_forces (pullback)", pot.energies_forces),
                ("forces_from_sparse", functools.partial(forces_from_sparse, pot)),
                ("  of which ZBL energy_forces", pot.repulsion_.energy_forces),
                ("_force_design (sparse, fit per structure)", pot._force_design),
            ]
            timings = {}
            for label, fn in rows:
                t, ld = median_time(fn, atoms, args.repeat)
                timings[label] = t
                out(f"  {label:44s} {t * 1e3:9.1f} ms   ({ld})")
            padded = float(soap.r_cut) + soap.descriptor_.get_cutoff_padding()
            with warnings.catch_warnings():  # energy rows alone may be rank-deficient
                warnings.simplefilter("ignore", LinAlgWarning)
                smooth = EMLMPotential(
                    default_descriptor().set_params(weighting={"function": "poly", "r0": padded,
                                                               "c": 1.0, "m": 2.0}),
                    n_references=100, atomic_energies=OFFSETS, force_structures=0,
                    random_state=0).fit(train)
            for label, p in [("plain SOAP", pot), ("SOAP with poly weighting", smooth)]:
                jumps = cutoff_jumps(p, atoms)
                out(f"  energy jump at r_cut + padding, {label:25s} median {np.median(jumps):.1e}"
                    f" eV, max {jumps.max():.1e} eV over {jumps.size} pairs")
            if args.no_xtb:
                continue
            for method in methods:
                (cold, ld1), (warm, ld2) = xtb_times(atoms, method, charge, args.repeat)
                for kind, t, ld in [("cold", cold, ld1), ("warm", warm, ld2)]:
                    ratios = ", ".join(
                        f"{t / timings[k]:.0f}x {k.split(' ')[0]}" for k in
                        ["energies_forces (pullback)", "forces_from_sparse"])
                    out(f"  {method + ' single point, ' + kind:44s} {t * 1e3:9.1f} ms   ({ld})"
                        f"  = {ratios}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
