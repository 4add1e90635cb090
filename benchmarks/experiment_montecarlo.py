"""Monte Carlo with machine-learned energies against GFN2-xTB MD: structure distributions.

    python benchmarks/experiment_montecarlo.py ring [--steps 2000] [--xtb-steps 0]

Ring at 300 K (issue: peaks within 0.02 Å / 2° of the reference MD, widths within 20 %).
Reference: the bundled GFN2-xTB Langevin MD of Au5(SCH3)5 at 300 K (``load_gold_thiolate_rings``,
run ``Au5(SCH3)5_300K``, 0.6 ps, its first 50 stored frames left out as equilibration). Models,
none trained on that run:

* ``potential``: :class:`~mlmlearn.forcefield.EMLMPotential` (defaults) on
  :func:`~mlmlearn.datasets.training_mask` of every ring frame (stride 4; MD, relaxations,
  active-learning frames) without the 300 K Au5 run;
* ``energy model``: paper II's MBTR → EMLM (:func:`~mlmlearn.forcefield.default_energy_model`,
  every training structure a reference) on the Au5 frames of the same selection (one ring size,
  as paper II trained on one cluster), run with
  :class:`~mlmlearn.applications.montecarlo.IncrementalEnergy`;
* with ``--xtb-steps N``: GFN2-xTB itself, N MC steps (a reference MC run, same code).

Each runs Metropolis MC (paper II's moves) at 300 K from the run's first frame: 200
equilibration steps (step size adapted to 40–60 % acceptance) and ``--steps`` production steps,
every 5th kept. Distributions (Gaussian smoothing 0.005 Å for bonds, 1.75° for angles, as paper
II): peak position and FWHM of Au–S and S–C bonds and the Au–S–Au and S–Au–S angles, MC against
MD, and the fraction of MC frames with a broken bond. Output: printed and written to
``benchmarks/results/montecarlo_ring.txt``; trajectories in ``benchmarks/results/mc_ring/``.
"""

import argparse
import os
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

RUN = "Au5(SCH3)5_300K"
OUT = "benchmarks/results/montecarlo_ring.txt"
GRIDS = {
    ("Au", "S"): (np.linspace(2.0, 2.9, 1801), 0.005),
    ("S", "C"): (np.linspace(1.6, 2.2, 1201), 0.005),
    ("Au", "S", "Au"): (np.linspace(60.0, 140.0, 1601), 1.75),
    ("S", "Au", "S"): (np.linspace(140.0, 190.0, 1001), 1.75),
}


def _stats(frames):
    from mlmlearn.applications.analysis import (
        bond_angles,
        bond_lengths,
        peak,
        smoothed_distribution,
    )

    out = {}
    for key, (grid, sigma) in GRIDS.items():
        values = bond_lengths(frames, key) if len(key) == 2 else bond_angles(frames, key)
        out[key] = peak(grid, smoothed_distribution(values, grid, sigma))
    return out


def _mc(name, atoms, steps, energy=None, verbose=1):
    from ase.io import read

    from mlmlearn.applications.montecarlo import MonteCarlo

    os.makedirs("benchmarks/results/mc_ring", exist_ok=True)
    path = f"benchmarks/results/mc_ring/{name}.extxyz"
    mc = MonteCarlo(atoms, 300.0, energy=energy, step_size=0.05, trajectory=path,
                    write_interval=5, checkpoint_interval=50, random_state=0, verbose=verbose)
    t0 = time.perf_counter()
    mc.equilibrate(200)
    mc.run(steps)
    wall = time.perf_counter() - t0
    frames = [f for f in read(path, ":") if f.info.get("phase") == "production"]
    return mc, frames, wall


def ring(args, say):
    from mlmlearn.applications.analysis import broken_bonds
    from mlmlearn.applications.montecarlo import IncrementalEnergy
    from mlmlearn.datasets import isolated_atom_energies, load_gold_thiolate_rings, training_mask
    from mlmlearn.forcefield import EMLMPotential, MLMCalculator, default_energy_model

    data = load_gold_thiolate_rings(kind="all")
    runs = np.asarray(data.run_names)[data.run]
    reference = [f for f, r in zip(data.frames, runs, strict=True) if r == RUN]
    md = reference[50:]
    keep = training_mask(data, data.source_run == RUN, stride=4)
    train = [f for f, k in zip(data.frames, keep, strict=True) if k]
    au5 = [f for f in train if len(f) == 30]
    say(f"reference: GFN2-xTB MD {RUN}, {len(md)} frames after the first 50; training "
        f"{len(train)} ring frames ({len(au5)} Au5) without that run")
    rows = {"GFN2-xTB MD": _stats(md)}
    start = reference[0].copy()
    start.calc = None

    pot = EMLMPotential(atomic_energies=isolated_atom_energies("GFN2-xTB"))
    t0 = time.perf_counter()
    pot.fit(train)
    say(f"potential fitted in {time.perf_counter() - t0:.0f} s")
    atoms = start.copy()
    atoms.calc = MLMCalculator(pot)
    mc, frames, wall = _mc("potential", atoms, args.steps)
    rows["MC, potential"] = _stats(frames)
    say(f"MC on the potential: {args.steps} steps in {wall:.0f} s, step size "
        f"{mc.step_size:.4f} Å, acceptance {np.mean(mc.acceptance[200:]):.2f}; broken frames "
        f"{sum(bool(broken_bonds(f)) for f in frames)}/{len(frames)}")

    model = default_energy_model()
    t0 = time.perf_counter()
    model.fit(au5, [f.get_potential_energy() for f in au5])
    say(f"energy model fitted on {len(au5)} Au5 frames in {time.perf_counter() - t0:.1f} s")
    atoms = start.copy()
    mc, frames, wall = _mc("energy_model", atoms, args.steps, energy=IncrementalEnergy(model))
    rows["MC, MBTR→EMLM"] = _stats(frames)
    say(f"MC on the energy model: {args.steps} steps in {wall:.0f} s, step size "
        f"{mc.step_size:.4f} Å, acceptance {np.mean(mc.acceptance[200:]):.2f}; broken frames "
        f"{sum(bool(broken_bonds(f)) for f in frames)}/{len(frames)}")

    if args.xtb_steps:
        from tblite.ase import TBLite

        atoms = start.copy()
        atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
        mc, frames, wall = _mc("gfn2", atoms, args.xtb_steps)
        rows["MC, GFN2-xTB"] = _stats(frames)
        say(f"MC on GFN2-xTB: {args.xtb_steps} steps in {wall:.0f} s")

    say("\npeak position / FWHM (Å for bonds, ° for angles); in brackets the difference to the "
        "MD peak and the width ratio")
    ref = rows["GFN2-xTB MD"]
    header = f"{'':>16}" + "".join(f"{'-'.join(k):>26}" for k in GRIDS)
    say(header)
    for name, stats in rows.items():
        cells = []
        for key in GRIDS:
            (p, w), (p0, w0) = stats[key], ref[key]
            digits = 3 if len(key) == 2 else 1
            cells.append(f"{p:.{digits}f}/{w:.{digits}f} ({p - p0:+.{digits}f}, {w / w0:.2f})")
        say(f"{name:>16}" + "".join(f"{c:>26}" for c in cells))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["ring"])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--xtb-steps", type=int, default=0)
    args = parser.parse_args(argv)
    lines = [f"load {os.getloadavg()[0]:.2f}; {' '.join(sys.argv)}"]

    def say(text):
        print(text, flush=True)
        lines.append(text)

    with threadpool_limits(1):
        ring(args, say)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
