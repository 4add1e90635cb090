"""Monte Carlo with machine-learned energies against GFN2-xTB MD: structure distributions.

    python benchmarks/experiment_montecarlo.py ring [--steps 2000] [--xtb-steps 0]
    python benchmarks/experiment_montecarlo.py energy
    python benchmarks/experiment_montecarlo.py au25 [--rounds 3] [--steps 1000]

``ring``: at 300 K (issue: peaks within 0.02 Å / 2° of the reference MD, widths within 20 %).
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
MD, and the fraction of MC frames with a broken bond; trajectories in
``benchmarks/results/mc_ring/``.

``energy``: held-out energy RMSE of paper II's model (EMLM and MLM, all references) per ring
size (300 K and 900 K runs → 600 K run) and on Au25(SCH3)18⁻ (heating run → 300 K and 500 K
runs), beside paper II's 2.67 / 2.98 eV on Au38(SCH3)24.

``au25``: :func:`~mlmlearn.applications.montecarlo.montecarlo_active_learning` at 300 K from
the optimized Au25(SCH3)18⁻ with the model trained on the heating run, GFN1-xTB references
(resumable: ``benchmarks/results/mc_au25_al``); per round the broken-frame fraction, flagged and
added frames, the reference-energy RMSE and the wall-time split, and every round's bond and
angle distributions against the bundled GFN1-xTB MD at 300 K.

Output: printed and written to ``benchmarks/results/montecarlo_<part>.txt``.
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
    relax = load_gold_thiolate_rings(kind="relaxation")
    ends = [relax.frames[i] for i in range(len(relax.frames))
            if (i == len(relax.frames) - 1 or relax.run[i + 1] != relax.run[i])
            and relax.status[i] == "converged" and len(relax.frames[i]) == 30]
    rows["GFN2-xTB minima"] = _stats(ends)
    say(f"(GFN2-xTB minima: the {len(ends)} converged Au5 relaxation ends, for orientation)")
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

    _table(rows, "GFN2-xTB MD", say)


def energy(args, say):
    """Held-out energy RMSE of paper II's model (MBTR k2 set 2 → EMLM, all references, and
    MLM) per ring size (trained on the 300 K and 900 K runs of that size, tested on its 600 K
    run) and on Au25(SCH3)18⁻ (trained on the heating run, tested on the 300 K and 500 K runs)."""
    from mlmlearn.datasets import load_au25, load_gold_thiolate_rings
    from mlmlearn.forcefield import default_energy_model

    def report(name, train, test):
        E = np.array([f.get_potential_energy() for f in test])
        n = len(test[0])
        cells = []
        for estimator in ("emlm", "mlm"):
            model = default_energy_model(estimator)
            t0 = time.perf_counter()
            model.fit(train, [f.get_potential_energy() for f in train])
            rmse = float(np.sqrt(np.mean((model.predict(test) - E) ** 2)))
            cells.append(f"{estimator.upper()} {rmse:.3f} eV ({1000 * rmse / n:.2f} meV/atom, "
                         f"fit {time.perf_counter() - t0:.1f} s)")
        say(f"{name}: {len(train)} train, {len(test)} test frames; std of test energies "
            f"{E.std():.3f} eV; " + "; ".join(cells))

    data = load_gold_thiolate_rings()
    runs = np.asarray(data.run_names)[data.run]
    for n in range(4, 9):
        name = f"Au{n}(SCH3){n}"
        train = [f for f, r in zip(data.frames, runs, strict=True)
                 if r in (f"{name}_300K", f"{name}_900K")]
        test = [f for f, r in zip(data.frames, runs, strict=True) if r == f"{name}_600K"]
        report(f"{name}, 600 K run held out", train, test)
    au25 = load_au25(runs="all")
    runs = np.asarray(au25.run_names)[au25.run]
    train = [f for f, r in zip(au25.frames, runs, strict=True) if r.endswith("heating")]
    test = [f for f, r in zip(au25.frames, runs, strict=True) if not r.endswith("heating")]
    report("Au25(SCH3)18-, 300 K and 500 K runs held out", train, test)
    say("paper II (Au38(SCH3)24, DFT): structure RMSE 2.67 eV (EMLM), 2.98 eV (MLM)")


def au25(args, say):
    """Monte Carlo active learning on Au25(SCH3)18⁻ at 300 K with GFN1-xTB references."""
    import functools

    from ase.io import read
    from tblite.ase import TBLite

    from mlmlearn.applications.montecarlo import montecarlo_active_learning
    from mlmlearn.datasets import load_au25
    from mlmlearn.forcefield import default_energy_model

    train = load_au25().frames
    energies = [f.get_potential_energy() for f in train]
    reference_run = load_au25(runs="Au25(SCH3)18_300K").frames
    start = reference_run[0].copy()  # step 0: the optimized structure every run started from
    start.calc = None
    folder = "benchmarks/results/mc_au25_al"
    reference = functools.partial(TBLite, method="GFN1-xTB", charge=-1, verbosity=0)
    say(f"Au25(SCH3)18-: MBTR → EMLM (all references) trained on the {len(train)} heating-run "
        f"frames; MC at 300 K from the optimized structure, {args.steps} production steps per "
        f"round, GFN1-xTB references; checkpoint {folder}")
    t0 = time.perf_counter()
    result = montecarlo_active_learning(
        default_energy_model(), train, energies, reference, start, temperature_K=300.0,
        rounds=args.rounds, n_steps=args.steps, equilibration=100, sample_every=10,
        max_added=20, n_check=10, n_jobs=1, checkpoint=folder, verbose=1)
    say(f"{len(result.history)} rounds in {time.perf_counter() - t0:.0f} s (this invocation); "
        f"converged: {result.converged}")
    say("round | frames | broken | flagged | added | checked (failed) | energy RMSE eV "
        "(meV/atom) | time MC / reference / fit s")
    for h in result.history:
        say(f"{h['round']:5d} | {h['frames']:6d} | {h['broken_fraction']:6.2f} | "
            f"{h['flagged']:7d} | {h['added']:5d} | {h['checked']:7d} ({h['failed']}) | "
            f"{h['energy_rmse']:.3f} ({1000 * h['energy_rmse_per_atom']:.2f}) | "
            f"{h['time_mc']:.0f} / {h['time_reference']:.0f} / {h['time_fit']:.0f}")
    rows = {"GFN1-xTB MD 300 K": _stats(reference_run[50:])}
    mc_frames = {}
    for h in result.history:
        frames = [f for f in read(os.path.join(folder, f"round{h['round']}.extxyz"), ":")
                  if f.info.get("phase") == "production"]
        rows[f"MC round {h['round']}"] = _stats(frames)
        mc_frames[h["round"]] = frames
    _table(rows, "GFN1-xTB MD 300 K", say)
    _pca(result.model, train, mc_frames, say)


def _pca(model, train, mc_frames, say):
    """Paper II fig. 2: MBTR of the training frames and of each round's MC frames in the
    training frames' principal components (the final model's MBTR and scaling)."""
    from mlmlearn.applications.analysis import descriptor_pca

    rounds = sorted(mc_frames)
    coordinates, pca = descriptor_pca(model[:-1], train, *(mc_frames[r] for r in rounds))
    radius = np.linalg.norm(coordinates[0], axis=1).max()
    outside = [float(np.mean(np.linalg.norm(c, axis=1) > radius)) for c in coordinates[1:]]
    say(f"\nPCA of the scaled MBTR (explained variance of 2 components "
        f"{pca.explained_variance_ratio_.sum():.2f}): fraction of MC frames outside the "
        "training cloud's radius per round: "
        + ", ".join(f"{r}: {o:.2f}" for r, o in zip(rounds, outside, strict=True)))
    try:
        from mlmlearn.plotting import plot_pca
    except ImportError:  # pragma: no cover - the plot extra
        return
    labels = ["training (heating run)"] + [f"MC round {r}" for r in rounds]
    figure = plot_pca(dict(zip(labels, coordinates, strict=True)))
    figure.savefig("benchmarks/results/montecarlo_au25_pca.png", dpi=120)
    say("figure: benchmarks/results/montecarlo_au25_pca.png")


def _table(rows, reference, say):
    say("\npeak position / FWHM (Å for bonds, ° for angles); in brackets the difference to the "
        "reference peak and the width ratio")
    ref = rows[reference]
    say(f"{'':>18}" + "".join(f"{'-'.join(k):>26}" for k in GRIDS))
    for name, stats in rows.items():
        cells = []
        for key in GRIDS:
            (p, w), (p0, w0) = stats[key], ref[key]
            digits = 3 if len(key) == 2 else 1
            cells.append(f"{p:.{digits}f}/{w:.{digits}f} ({p - p0:+.{digits}f}, {w / w0:.2f})")
        say(f"{name:>18}" + "".join(f"{c:>26}" for c in cells))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["ring", "energy", "au25"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None,
                        help="production MC steps (ring: 2000, au25: 1000 per round)")
    parser.add_argument("--xtb-steps", type=int, default=0)
    args = parser.parse_args(argv)
    lines = [f"load {os.getloadavg()[0]:.2f}; {' '.join(sys.argv)}"]

    def say(text):
        print(text, flush=True)
        lines.append(text)

    if args.steps is None:
        args.steps = 2000 if args.part == "ring" else 1000
    with threadpool_limits(1):
        {"ring": ring, "energy": energy, "au25": au25}[args.part](args, say)
    out = OUT.replace("ring", args.part)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
