"""Hybrid optimization of gold-thiolate rings: GFN2-xTB calls to reach the GFN2-xTB minimum.

    python benchmarks/hybrid_rings.py [--sizes 4 5 6] [--stride 8] [--references 500] \\
        [--rattles 3] [--output benchmarks/results/hybrid_rings.txt]

The figure of merit of issue 13 (section 3 b): reference force calls needed to reach the
reference minimum (fmax 0.05 eV/Å, and within 0.05 eV of the energy plain BFGS ends at),
against a plain reference BFGS from the same start; target at least 3× fewer.

For each ring size n: paper IV's force field (per atom type SOAP → MinMaxScaler → EMLM norms
and GoldThiolateAlignment OAMLM directions) trained on the bundled GFN2-xTB ring MD with the
Au_n ring held out (every ``--stride``-th frame, every environment of a type that a stride
would make rare — core gold —, ``--references`` RS-maximin references per type; as
``mlmlearn demo`` and ``benchmarks/experiment_rings.py`` train it). Two starts per size:
the ring as ``gold_thiolate_ring(n)`` builds it (paper IV) and the last frame of the held-out
600 K run. From each start, GFN2-xTB (tblite, one thread) calls to fmax 0.05 eV/Å of

- (a) plain BFGS, ASE's defaults (maxstep 0.2 Å, α = 70 eV/Å²), and the same from
  ``--rattles`` copies of the start displaced by at most 1e-3 Å per coordinate: how much the
  count of a BFGS path moves when nothing of substance changes (min–max);
- control: the hybrid's reference BFGS with neither ML rounds nor the force field's Hessian
  (``ml_steps=0, precondition=False``): the same algorithm as (a), run by hybrid_optimize;
- (b) ``hybrid_optimize`` with ``refit=False``; (c) with ``refit=True`` (its defaults).

Every count is the number of ``calculate`` calls the GFN2-xTB calculator received (the
hybrid's own count is checked against it). ΔE is the end energy minus the energy plain BFGS
ends at; an end more than 0.05 eV above it has not reached the reference minimum (marked
``*``), one lower has found a lower minimum. A run whose SCF fails is reported as such.
The table goes to standard output and to ``--output``.
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

FMAX = 0.05
ENERGY_WINDOW = 0.05


def _counting_gfn2():
    from tblite.ase import TBLite

    class CountingGFN2(TBLite):
        n_calls = 0

        def calculate(self, *args, **kwargs):
            self.n_calls += 1
            super().calculate(*args, **kwargs)

    return CountingGFN2(method="GFN2-xTB", charge=0, verbosity=0)


def plain_bfgs(start):
    """ASE's BFGS (defaults) on GFN2-xTB: (calls, end energy, converged, note, energies)."""
    from ase.calculators.calculator import CalculationFailed
    from ase.optimize import BFGS

    atoms = start.copy()
    atoms.calc = calc = _counting_gfn2()
    opt = BFGS(atoms, logfile=None)
    energies, flags = [], []
    try:
        for flag in opt.irun(fmax=FMAX, steps=1000):
            flags.append(flag)
            energies.append(atoms.get_potential_energy())  # computed with the forces
    except CalculationFailed:
        return calc.n_calls, float("nan"), False, "SCF failed", energies
    return calc.n_calls, float(energies[-1]), bool(flags[-1]), "", energies


def hybrid(start, force_field, **kwargs):
    """hybrid_optimize on GFN2-xTB: (calls, end energy, converged, note, energies, result)."""
    import tempfile

    from ase.calculators.calculator import CalculationFailed
    from ase.io import read

    from mlmlearn.applications.hybrid import hybrid_optimize

    calc = _counting_gfn2()
    with tempfile.TemporaryDirectory() as tmp:
        trajectory = os.path.join(tmp, "hybrid.extxyz")
        try:
            result = hybrid_optimize(start, force_field, calc, fmax=FMAX,
                                     max_reference_calls=400, trajectory=trajectory, **kwargs)
        except CalculationFailed:  # the frames so far are in the trajectory
            energies = [f.get_potential_energy() if not f.info.get("failed") else np.nan
                        for f in read(trajectory, ":")]
            return calc.n_calls, float("nan"), False, "SCF failed", energies, None
    assert calc.n_calls == result.n_reference_calls, (calc.n_calls, result.n_reference_calls)
    energy = float(result.atoms.get_potential_energy())
    return (calc.n_calls, energy, result.converged, "", list(result.reference_energies),
            result)


def force_field_without(n, frames, stride, references):
    from mlmlearn._demo import _training_environments
    from mlmlearn.forcefield import ForceField, default_direction_model, default_norm_model

    env = _training_environments(frames, 6 * n, stride)
    ff = ForceField(default_norm_model(references), default_direction_model(references))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rare type's references capped; no core model
        ff.fit(env)
    return ff, len(env)


def _cell(calls, energy, converged, note, energies, e_ref):
    """``calls (ΔE) [first call within 0.05 eV of the reference minimum or below]``."""
    below = np.flatnonzero(np.asarray(energies, dtype=float) <= e_ref + ENERGY_WINDOW)
    first = f"[{below[0] + 1}]" if below.size else "[–]"
    if note:
        return f"{note} ({calls}) {first}"
    if not converged:
        return f"{calls} not conv. {first}"
    delta = energy - e_ref
    mark = "*" if delta > ENERGY_WINDOW else ""
    return f"{calls}{mark} ({delta:+.3f}) {first}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 5, 6])
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--references", type=int, default=500)
    parser.add_argument("--rattles", type=int, default=3)
    parser.add_argument("--output", default="benchmarks/results/hybrid_rings.txt")
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    from mlmlearn.datasets import gold_thiolate_ring, load_gold_thiolate_rings

    frames = load_gold_thiolate_rings().frames
    lines = []

    def out(text=""):
        print(text, flush=True)
        lines.append(text)

    out(f"load average at start: {os.getloadavg()[0]:.2f}")
    header = (f"{'start':<16}{'(a) plain BFGS':>22}{'rattled 1e-3 Å':>16}{'control':>22}"
              f"{'(b) no refit':>22}{'(c) refit':>22}{'a/c':>6}{'ML steps (c)':>14}")
    rows = []
    t_all = time.perf_counter()
    for n in args.sizes:
        t0 = time.perf_counter()
        with threadpool_limits(1):
            ff, n_env = force_field_without(n, frames, args.stride, args.references)
        out(f"Au{n}(SCH3){n} held out: force field on {n_env} environments "
            f"({', '.join(f'{t} {c}' for t, c in ff.n_samples_.items())}; models for "
            f"{ff.types_}), fitted in {time.perf_counter() - t0:.0f} s")
        held = [f for f in frames if len(f) == 6 * n]
        md = [f for f in held if f.info["temperature_K"] == 600.0][-1].copy()
        for name, start in (("built", gold_thiolate_ring(n)), ("600 K frame", md)):
            start = start.copy()
            start.calc = None
            t0 = time.perf_counter()
            with threadpool_limits(1):  # GFN2-xTB below 50 atoms: one thread is fastest
                a = plain_bfgs(start)
                rattled = []
                for seed in range(args.rattles):
                    moved = start.copy()
                    rng = np.random.default_rng(seed)
                    moved.positions += rng.uniform(-1e-3, 1e-3, size=moved.positions.shape)
                    rattled.append(plain_bfgs(moved))
                control = hybrid(start, ff, ml_steps=0, precondition=False, refit=False)
                b = hybrid(start, ff, refit=False)
                c = hybrid(start, ff, refit=True)
            converged = [r[1] for r in (a, *rattled, control, b, c) if r[2]]
            e_ref = a[1] if a[2] else min(converged, default=float("nan"))
            counts = [r[0] for r in rattled if r[2]]
            spread = f"{min(counts)}–{max(counts)}" if counts else "all"
            if len(counts) < len(rattled):
                spread += f" ({len(rattled) - len(counts)} SCF failed)"
            ratio = f"{a[0] / c[0]:.2f}" if a[2] and c[2] else "–"
            ml = str(c[5].n_ml_steps) if c[5] is not None else "–"
            label = f"Au{n} {name}"
            row = (f"{label:<16}{_cell(*a, e_ref):>22}{spread:>20}"
                   f"{_cell(*control[:5], e_ref):>22}{_cell(*b[:5], e_ref):>22}"
                   f"{_cell(*c[:5], e_ref):>22}{ratio:>6}{ml:>14}")
            rows.append(row)
            out(f"  {header.strip()}\n  {row}")
            for what, r in (("plain", a), *((f"rattled {i}", x) for i, x in enumerate(rattled)),
                            ("control", control), ("(b)", b), ("(c)", c)):
                out(f"    {what}: {r[0]} calls, end {r[1]:.6f} eV, converged {r[2]} {r[3]}")
            for what, r in (("(b)", b), ("(c)", c)):
                if r[5] is not None:
                    kinds = r[5].kinds
                    rounds = np.isin(kinds, ["ml", "uncertainty", "domain"])
                    out(f"  {label} {what}: {rounds.sum()} ML rounds checked "
                        f"({int(r[5].accepted[rounds].sum())} accepted), "
                        f"{np.sum(kinds == 'reference')} reference steps, the force field's "
                        f"Hessian at call {r[5].hessian_calls}")
            out(f"  {label}: {time.perf_counter() - t0:.0f} s")
            if not a[2]:
                out(f"  {label}: plain BFGS {a[3] or 'did not converge'}; ΔE relative to the "
                    "lowest converged end")
    out()
    out("GFN2-xTB calls to fmax 0.05 eV/Å (ΔE in eV: end energy minus plain BFGS's end, * more "
        "than 0.05 eV above it; [k]: the first call within 0.05 eV of that energy or below)")
    out(header)
    for row in rows:
        out(row)
    out(f"\ntotal {time.perf_counter() - t_all:.0f} s; load average at end: "
        f"{os.getloadavg()[0]:.2f}")
    if args.output:
        os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
        with open(args.output, "w") as f:
            f.write("python benchmarks/hybrid_rings.py " + " ".join(argv or sys.argv[1:]) + "\n")
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
