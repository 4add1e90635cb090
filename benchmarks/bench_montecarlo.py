"""Monte Carlo trial moves per second: incremental MBTR → EMLM energies against the full recompute.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
        python benchmarks/bench_montecarlo.py [--steps 3] [--no-xtb]

Paper II's energy model (:func:`mlmlearn.forcefield.default_energy_model`: MBTR k2 set 2 →
variance threshold → min-max → EMLM with every training structure a reference) fitted on the
600 frames of the bundled Au25(SCH3)18⁻ heating run (GFN1-xTB energies). Two structures: a
frame of the independent 300 K Au25 run (115 atoms, 61 moving parts) and Au38(SCH3)24 Q
(``../shared/structures/au38_sch3_24_q.xyz``, 158 atoms, 86 parts: paper II's system; the
Au25 model's energies mean nothing there, the cost is what is timed).

For each, the same Metropolis run at 300 K (paper II's moves, step size 0.02 Å, same seed) is
timed with three energy sources: :class:`~mlmlearn.applications.montecarlo.IncrementalEnergy`
(the moved atoms' pairs only), the full recompute through
:class:`~mlmlearn.forcefield.MLMCalculator` (dscribe MBTR + the pipeline's ``predict`` per
trial: what a user gets without the incremental model), and for scale a GFN1-xTB single point
per trial (tblite, one cold and one warm call timed, not a run). The two ML runs must accept
the same moves and end at the same energy (printed: the largest difference along the run).
Paper II's cost: MBTR 0.07 s + EMLM 0.05 s per energy on one core.

Output: printed and written to ``benchmarks/results/bench_montecarlo.txt``.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

AU38 = Path(__file__).resolve().parents[2] / "shared" / "structures" / "au38_sch3_24_q.xyz"
OUT = Path("benchmarks/results/bench_montecarlo.txt")


def _run(atoms, energy, steps):
    from mlmlearn.applications.montecarlo import MonteCarlo

    atoms = atoms.copy()
    if energy is None:
        from mlmlearn.forcefield import MLMCalculator

        atoms.calc = MLMCalculator(energy_model=MODEL)
    mc = MonteCarlo(atoms, 300.0, step_size=0.02, energy=energy, random_state=0)
    t0 = time.perf_counter()
    mc.run(steps)
    wall = time.perf_counter() - t0
    return mc, wall / (steps * len(mc.parts))


def _xtb(atoms, charge):
    from tblite.ase import TBLite

    a = atoms.copy()
    a.calc = TBLite(method="GFN1-xTB", charge=charge, verbosity=0)
    t0 = time.perf_counter()
    a.get_potential_energy()
    cold = time.perf_counter() - t0
    a.positions[0, 0] += 0.01
    t0 = time.perf_counter()
    a.get_potential_energy()
    return cold, time.perf_counter() - t0


def main(argv=None):
    global MODEL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--no-xtb", action="store_true")
    args = parser.parse_args(argv)

    from ase.io import read

    from mlmlearn.applications.montecarlo import IncrementalEnergy
    from mlmlearn.datasets import load_au25
    from mlmlearn.forcefield import default_energy_model

    lines = [f"load {os.getloadavg()[0]:.2f}; {' '.join(sys.argv)}"]

    def say(text):
        print(text, flush=True)
        lines.append(text)

    train = load_au25().frames
    MODEL = default_energy_model()
    with threadpool_limits(1):
        t0 = time.perf_counter()
        MODEL.fit(train, [f.get_potential_energy() for f in train])
        say(f"energy model fitted on {len(train)} Au25 frames in {time.perf_counter() - t0:.1f} s; "
            f"{MODEL[-1].references_.shape[0]} references, {MODEL[-1].references_.shape[1]} "
            "features")
        systems = [("Au25(SCH3)18-, 300 K frame", load_au25(runs="Au25(SCH3)18_300K").frames[100],
                    -1)]
        if AU38.exists():
            systems.append(("Au38(SCH3)24 Q", read(AU38), 0))
        else:
            say(f"({AU38} not found: Au38 skipped)")
        for name, atoms, charge in systems:
            atoms = atoms.copy()
            atoms.calc = None
            _run(atoms, IncrementalEnergy(MODEL), 1)  # compile (or load) the kernel first
            inc, t_inc = _run(atoms, IncrementalEnergy(MODEL), args.steps)
            full, t_full = _run(atoms, None, args.steps)
            same = inc.acceptance == full.acceptance
            diff = np.max(np.abs(np.array(inc.energies) - np.array(full.energies)))
            say(f"\n{name}: {len(atoms)} atoms, {len(inc.parts)} parts, {args.steps} MC steps "
                f"({args.steps * len(inc.parts)} trial moves)")
            say(f"  incremental   {1e3 * t_inc:8.3f} ms per trial ({1 / t_inc:8.0f} trials/s)")
            say(f"  full recompute{1e3 * t_full:8.3f} ms per trial ({1 / t_full:8.0f} trials/s); "
                f"ratio {t_full / t_inc:.1f}x")
            say(f"  same accepted moves: {same}; largest energy difference along the run "
                f"{diff:.2e} eV (energies ~{abs(inc.energy):.0f} eV)")
            if not args.no_xtb:
                cold, warm = _xtb(atoms, charge)
                say(f"  GFN1-xTB single point: cold {cold:.2f} s, warm {warm:.2f} s; "
                    f"ratio to incremental {warm / t_inc:.0f}x (warm)")
        say("\npaper II: MBTR 0.07 s + EMLM 0.05 s per energy (0.12 s) on one core")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")


MODEL = None

if __name__ == "__main__":
    main()
