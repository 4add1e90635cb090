"""The conservative potential beside paper IV's force field: held-out accuracy, optimization, MD.

    python benchmarks/experiment_potential.py accuracy --split run    # Au5(SCH3)5 600 K held out
    python benchmarks/experiment_potential.py accuracy --split size   # every Au5 run held out
    python benchmarks/experiment_potential.py accuracy --split au25   # the 300 K Au25 run held out
    python benchmarks/experiment_potential.py optimize                # BFGS/FIRE vs GFN2-xTB minima
    python benchmarks/experiment_potential.py md                      # 600 K Langevin, NVE drift

Training data (:func:`mlmlearn.datasets.training_mask`): every ``--stride``-th MD frame and
relaxation step of the bundled data, the last step of every converged reference relaxation
path, and the bundled active-learning frames (``load_gold_thiolate_rings(kind="active")``,
found with the ``Au5(SCH3)5_600K`` run held out; ``--no-active`` leaves them out; the size
split leaves out their Au5 frames), never a frame of what is held out. Regenerate the
active-learning frames with ``python -m mlmlearn.datasets.generate ring-active``. The
potential is :class:`~mlmlearn.forcefield.EMLMPotential` with the settings printed; paper
IV's force field (EMLM norm × OAMLM direction per atom type) is fitted on ``--k4`` random
environments per type of the same frames. Errors are per element for both models: force
RMSE of the vector error |F_pred − F_ref| (and per Cartesian component, = vector / √3), MAE,
norm RMSE, the force-weighted angle (weights |F_ref|²), and for the potential the energy
RMSE per atom. Results are printed and written to ``benchmarks/results/potential_<part>.txt``.
"""

import argparse
import io
import os
import sys
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

HELD_OUT_RUN = "Au5(SCH3)5_600K"
RESULTS = "benchmarks/results"


class Tee(io.TextIOBase):
    def __init__(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.file = open(path, "w")  # noqa: SIM115

    def write(self, text):
        sys.stdout.write(text)
        sys.stdout.flush()
        self.file.write(text)
        self.file.flush()
        return len(text)


# ---------------------------------------------------------------------------- data
def ring_split(split, stride, relaxations=True, active=True):
    """(train frames, test frames, description) of the ring data for ``split``."""
    from mlmlearn.datasets import load_gold_thiolate_rings, training_mask

    data = load_gold_thiolate_rings(kind="all")
    runs = np.asarray(data.run_names)[data.run]
    if split == "run":
        held = data.source_run == HELD_OUT_RUN
        what = f"the {HELD_OUT_RUN} run held out (its MD frames and relaxations)"
    elif split == "size":
        held = np.array([r.startswith("Au5(") for r in data.source_run]) | np.array(
            [len(f) == 30 for f in data.frames])
        what = "every Au5(SCH3)5 frame held out (ring size)"
    else:
        raise ValueError(split)
    md = data.kind == "md"
    exclude = held | (data.kind == "relaxation") if not relaxations else held
    if not active:
        exclude = exclude | (data.kind == "active")
    keep = training_mask(data, exclude, stride=stride)
    train = [f for f, k in zip(data.frames, keep, strict=True) if k]
    test = [f for f, h, m, r in zip(data.frames, held, md, runs, strict=True)
            if h and m and (split == "size" or r == HELD_OUT_RUN)]
    n_relax = int(np.sum(keep & (data.kind == "relaxation")))
    n_active = int(np.sum(keep & (data.kind == "active")))
    n_md = len(train) - n_relax - n_active
    return train, test[::2], (
        f"{what}; training {len(train)} frames ({n_md} MD and {n_relax} relaxation steps, "
        f"every {stride}th and the last of each converged path; {n_active} active-learning "
        f"frames)")


def au25_split(stride, relaxations=True):
    from mlmlearn.datasets import load_au25

    data = load_au25(runs="all", kind="all" if relaxations else "md")
    runs = np.asarray(data.run_names)[data.run]
    md = data.kind == "md"
    test_run = [r for r in data.run_names if "300" in r and "heat" not in r][0]
    held = data.source_run == test_run
    keep = ~held & (~md | (np.arange(len(md)) % stride == 0))
    train = [f for f, k in zip(data.frames, keep, strict=True) if k]
    test = [f for f, r in zip(data.frames, runs, strict=True) if r == test_run][::5]
    return train, test, f"Au25(SCH3)18-: {test_run} held out; training {len(train)} frames"


def atomic_energies(method):
    from mlmlearn.datasets import isolated_atom_energies

    try:
        return isolated_atom_energies(method)
    except FileNotFoundError:  # archive not packed yet: compute them (tblite, about 1 s)
        from ase import Atoms
        from tblite.ase import TBLite

        out = {}
        for element in ("H", "C", "S", "Au"):
            atom = Atoms(element)
            atom.calc = TBLite(method=method, verbosity=0)
            out[element] = atom.get_potential_energy()
        return out


# ---------------------------------------------------------------------------- models
def potential(method="GFN2-xTB", **params):
    from mlmlearn.forcefield import EMLMPotential

    return EMLMPotential(atomic_energies=atomic_energies(method), **params)


def paper_iv(frames, k, sigma2_unit=0.25):
    sys.path.insert(0, os.path.dirname(__file__))
    from _common import fit_on_random_environments

    from mlmlearn.forcefield import ForceField, default_direction_model, default_norm_model

    ff = ForceField(default_norm_model(k), default_direction_model(k))
    ff.set_params(Au_unit__direction__sigma2=sigma2_unit)
    return fit_on_random_environments(ff, frames, k)


def table(y, F, symbols, out, title):
    from mlmlearn.metrics import force_table

    t = force_table(y, F, symbols, labels=[s for s in ("Au", "S", "C", "H") if s in symbols])
    print(f"\n{title}", file=out)
    print(t, file=out)
    comp = ", ".join(f"{lab} {v / np.sqrt(3):.3f}" for lab, v in zip(t.types, t.rmse, strict=True))
    print(f"force RMSE per Cartesian component (eV/Å): {comp}", file=out, flush=True)
    return t


# ---------------------------------------------------------------------------- parts
def accuracy(args, out):
    from mlmlearn.atoms import AtomicEnvironments
    from mlmlearn.metrics import energy_rmse

    if args.split == "au25":
        train, test, what = au25_split(args.stride, args.relaxations)
        method = "GFN1-xTB"
    else:
        train, test, what = ring_split(args.split, args.stride, args.relaxations, args.active)
        method = "GFN2-xTB"
    print(f"split: {what}; test {len(test)} frames", file=out, flush=True)
    pot = potential(method, **_potential_params(args))
    print(f"potential: {pot!r}", file=out, flush=True)
    t0 = time.perf_counter()
    pot.fit(train)
    fit = time.perf_counter() - t0
    env = AtomicEnvironments(test)
    t0 = time.perf_counter()
    F = pot.predict_forces(test)
    per_call = (time.perf_counter() - t0) / len(test)
    E = pot.predict(test)
    n = [len(a) for a in test]
    e_err = (E - env.structure_energies) / np.array(n)
    print(f"fit {fit:.1f} s ({pot.n_energy_rows_} energy rows, {pot.n_force_rows_} force "
          f"rows); energy+forces {1000 * per_call:.1f} ms per structure", file=out)
    print(f"energy RMSE {1000 * energy_rmse(env.structure_energies, E, n_atoms=n):.2f} "
          f"meV/atom (mean error {1000 * e_err.mean():+.2f} meV/atom)", file=out)
    table(env.forces, F, env.symbols, out, "EMLMPotential, per element:")
    if args.k4:
        ff, fit4 = paper_iv(train, args.k4)
        ok = [a for a in test if np.isin(ff.atom_types(a), ff.types_).all()]
        env4 = AtomicEnvironments(ok)
        t0 = time.perf_counter()
        F4 = ff.predict(env4)
        per4 = (time.perf_counter() - t0) / len(ok)
        table(env4.forces, F4, env4.symbols, out,
              f"paper IV's force field (K={args.k4} per type, fit {fit4:.0f} s, "
              f"{1000 * per4:.0f} ms per structure; {len(ok)} of {len(test)} frames "
              "have every atom type modelled), per element:")


def _potential_params(args):
    from mlmlearn.atoms import SOAP

    weighting = ({"function": "poly", "r0": args.r_cut, "c": 1, "m": 2} if args.poly
                 else None)
    return dict(descriptor=SOAP(r_cut=args.r_cut, n_max=args.n_max, l_max=args.l_max,
                                sigma=0.25, weighting=weighting),
                n_references=args.references, epsilon=args.epsilon, scaling=args.scaling,
                energy_sigma=args.energy_sigma, force_sigma=0.05)


def _heavy_rmsd(a, b):
    from mlmlearn._demo import _heavy_rmsd as heavy_rmsd

    return heavy_rmsd(a, b)


def _au_contacts(atoms, cutoff=3.1):
    au = np.flatnonzero(atoms.numbers == 79)
    d = atoms.get_distances(au[0], au) if len(au) else []
    del d
    D = np.linalg.norm(atoms.positions[au][:, None] - atoms.positions[au][None], axis=2)
    return int(np.sum(np.triu(D < cutoff, 1)))


def _gfn2():
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", verbosity=0)


def _gfn2_minimum(start):
    from ase.optimize import BFGS

    atoms = start.copy()
    atoms.calc = _gfn2()
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=1000)
    return atoms


def _run(atoms, calc, optimizer, fmax, steps):
    from ase.optimize import BFGS, FIRE

    a = atoms.copy()
    a.calc = calc
    opt = {"BFGS": BFGS, "FIRE": FIRE}[optimizer](a, logfile=None)
    converged = opt.run(fmax=fmax, steps=steps)
    return a, bool(converged), opt.nsteps


def _gfn2_energy(atoms):
    a = atoms.copy()
    a.calc = _gfn2()
    try:
        return a.get_potential_energy()
    except Exception:  # noqa: BLE001 - an SCF failure on a distorted geometry is a result
        return np.nan


def optimize(args, out):
    from mlmlearn.datasets import gold_thiolate_ring, load_gold_thiolate_rings
    from mlmlearn.forcefield import MLMCalculator

    train, _, what = ring_split("run", args.stride, args.relaxations, args.active)
    pot = potential(**_potential_params(args))
    t0 = time.perf_counter()
    pot.fit(train)
    print(f"{what}\npotential {pot!r} fitted in {time.perf_counter() - t0:.0f} s", file=out)
    ff = None
    if args.k4:
        from mlmlearn.forcefield import ForcesOnly

        ff, fit4 = paper_iv(train, args.k4)
        print(f"paper IV's force field: K={args.k4} per type, fitted in {fit4:.0f} s; its "
              "BFGS: ForcesOnly, maxstep 0.1 Å, fmax 0.05 eV/Å, at most 200 steps, stopped by "
              "any error of the force field (an atom type without a model, a lost partner)",
              file=out)
    data = load_gold_thiolate_rings()
    runs = np.asarray(data.run_names)[data.run]
    held = [f for f, r in zip(data.frames, runs, strict=True) if r == HELD_OUT_RUN]
    starts = [(f"600 K frame {i}", held[i]) for i in range(0, len(held), 20)]
    starts.append(("built ring", gold_thiolate_ring(5)))
    rows = []
    print("\nstart | GFN2 min basin (Au-Au contacts) | optimizer: converged/steps, "
          "E_GFN2 above GFN2 min (eV), heavy RMSD (Å), contacts", file=out, flush=True)
    for name, start in starts:
        start = start.copy()
        start.calc = None
        ref = _gfn2_minimum(start)
        e_ref = ref.get_potential_energy()
        line = f"{name:>16} | {_au_contacts(ref)}"
        for opt in ("BFGS", "FIRE"):
            a = start
            for fmax in (0.05, 0.01):  # the criterion, then on to a tight one
                a, conv, n = _run(a, MLMCalculator(pot), opt, fmax, 2000)
                de = _gfn2_energy(a) - e_ref
                rmsd = _heavy_rmsd(a, ref)
                rows.append((name, f"{opt}@{fmax}", conv, n, de, rmsd, _au_contacts(a),
                             _au_contacts(ref)))
                line += f" | {opt}@{fmax}: {'yes' if conv else 'NO'}/{n}, {de:+.4f}, " \
                        f"{rmsd:.3f}, {_au_contacts(a)}"
        if ff is not None:
            from ase.optimize import BFGS

            b = start.copy()
            b.calc = MLMCalculator(ff)
            opt = BFGS(ForcesOnly(b), maxstep=0.1, logfile=None)
            try:
                conv = bool(opt.run(fmax=0.05, steps=200))
            except Exception:  # noqa: BLE001 - the force field left its domain: a result
                conv = False
            de = _gfn2_energy(b) - e_ref
            rmsd = _heavy_rmsd(b, ref)
            rows.append((name, "paper IV BFGS", conv, opt.nsteps, de, rmsd, _au_contacts(b),
                         _au_contacts(ref)))
            line += f" | paper IV: {'yes' if conv else 'NO'}/{opt.nsteps}, {de:+.4f}, " \
                    f"{rmsd:.3f}, {_au_contacts(b)}"
        # the criterion's own slack: GFN2-xTB's FIRE to fmax 0.05 from the same start
        g, conv, n = _run(start, _gfn2(), "FIRE", 0.05, 2000)
        de = g.get_potential_energy() - e_ref
        rows.append((name, "GFN2 FIRE@0.05", conv, n, de, _heavy_rmsd(g, ref), _au_contacts(g),
                     _au_contacts(ref)))
        line += f" | GFN2 FIRE@0.05: {'yes' if conv else 'NO'}/{n}, {de:+.4f}"
        # from the GFN2 minimum itself, to a tight fmax so that it moves at all
        a, conv, n = _run(ref, MLMCalculator(pot), "BFGS", 0.01, 2000)
        moved = _heavy_rmsd(a, ref)
        line += f" | from GFN2 min (BFGS to fmax 0.01): moved {moved:.3f} Å ({n} steps)"
        rows.append((name, "from-min", conv, n, np.nan, moved, _au_contacts(a),
                     _au_contacts(ref)))
        print(line, file=out, flush=True)
    for scheme in ("BFGS@0.05", "FIRE@0.05", "BFGS@0.01", "FIRE@0.01", "paper IV BFGS",
                   "GFN2 FIRE@0.05"):
        mine = [r for r in rows if r[1] == scheme]
        same = [r for r in mine if r[6] == r[7]]
        de = np.array([r[4] for r in same])
        rm = np.array([r[5] for r in same])
        print(f"\n{scheme}: converged {sum(r[2] for r in mine)} of {len(mine)}; same basin as "
              f"GFN2 (same Au-Au contact count) {len(same)} of {len(mine)}", file=out)
        if not mine:
            continue
        if same:
            print(f"  same basin: E_GFN2 above the GFN2 minimum median {np.nanmedian(de):.4f} "
                  f"eV, max {np.nanmax(de):.4f} eV; heavy RMSD median {np.median(rm):.3f} Å, "
                  f"max {rm.max():.3f} Å", file=out)
    moved = np.array([r[5] for r in rows if r[1] == "from-min"])
    print(f"started at the GFN2 minimum: moved median {np.median(moved):.4f} Å, max "
          f"{moved.max():.4f} Å", file=out, flush=True)


def md(args, out):
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    from mlmlearn.datasets import load_gold_thiolate_rings
    from mlmlearn.forcefield import MLMCalculator

    train, _, what = ring_split("run", args.stride, args.relaxations, args.active)
    pot = potential(**_potential_params(args))
    pot.fit(train)
    print(f"{what}\npotential {pot!r}", file=out, flush=True)
    data = load_gold_thiolate_rings()
    runs = np.asarray(data.run_names)[data.run]
    start = [f for f, r in zip(data.frames, runs, strict=True) if r == HELD_OUT_RUN][0].copy()
    start.calc = None
    n = len(start)

    atoms = start.copy()
    atoms.calc = MLMCalculator(pot)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature,
                                 rng=np.random.default_rng(0))
    Stationary(atoms)
    dt = 1.0
    n_steps = int(args.ps * 1000 / dt)
    dyn = Langevin(atoms, dt * units.fs, temperature_K=args.temperature, friction=0.01 / units.fs,
                   rng=np.random.default_rng(1))
    min_dist, snaps = [], []
    t0 = time.perf_counter()
    for step in range(n_steps):
        dyn.run(1)
        D = atoms.get_all_distances()
        min_dist.append(D[np.triu_indices(n, 1)].min())
        if step % 250 == 0:
            snaps.append(atoms.copy())
    wall = time.perf_counter() - t0
    errs = []
    for s in snaps:
        ref = s.copy()
        ref.calc = _gfn2()
        try:
            F_ref = ref.get_forces()
        except Exception:  # noqa: BLE001
            continue
        errs.append(np.sqrt(np.mean(np.sum((pot.predict_forces(s) - F_ref) ** 2, axis=1))))
    print(f"Langevin {args.temperature:.0f} K, {dt} fs, {args.ps} ps ({n_steps} steps) in "
          f"{wall:.0f} s; smallest interatomic distance over the run {min(min_dist):.3f} Å "
          f"(H-H in the data >= 1.6 Å, C-H >= 0.9 Å); force RMSE against GFN2-xTB on "
          f"{len(errs)} snapshots: median {np.median(errs):.3f}, max {np.max(errs):.3f} eV/Å",
          file=out, flush=True)

    # NVE: energy drift
    atoms = start.copy()
    atoms.calc = MLMCalculator(pot)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(2))
    Stationary(atoms)
    for dt in (0.5, 1.0):
        a = atoms.copy()
        a.calc = MLMCalculator(pot)
        a.set_velocities(atoms.get_velocities())
        dyn = VelocityVerlet(a, dt * units.fs)
        e, t = [], []
        steps = int(2000 / dt)
        for i in range(steps):
            dyn.run(1)
            e.append(a.get_total_energy())
            t.append((i + 1) * dt / 1000)
        slope = np.polyfit(t, np.array(e) / n, 1)[0]
        spread = (max(e) - min(e)) / n
        print(f"NVE {dt} fs, 2 ps from 300 K: drift {1e3 * slope:+.4f} meV/atom/ps, total "
              f"energy range {1e3 * spread:.3f} meV/atom", file=out, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["accuracy", "optimize", "md"])
    parser.add_argument("--split", choices=["run", "size", "au25"], default="run")
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--references", type=int, default=300)
    parser.add_argument("--epsilon", type=float, default=10.0)
    parser.add_argument("--energy-sigma", type=float, default=0.02)
    parser.add_argument("--r-cut", type=float, default=6.0)
    parser.add_argument("--n-max", type=int, default=4)
    parser.add_argument("--l-max", type=int, default=3)
    parser.add_argument("--k4", type=int, default=0,
                        help="also fit paper IV's force field with this K per type")
    parser.add_argument("--scaling", choices=["standard", "global"], default="global")
    parser.add_argument("--poly", action="store_true",
                        help="SOAP with the poly radial weighting (r0 = r_cut, c 1, m 2)")
    parser.add_argument("--no-relaxations", dest="relaxations", action="store_false",
                        help="train on MD frames only")
    parser.add_argument("--no-active", dest="active", action="store_false",
                        help="leave the bundled active-learning frames out of the ring "
                             "training sets")
    parser.add_argument("--temperature", type=float, default=600.0)
    parser.add_argument("--ps", type=float, default=5.0)
    args = parser.parse_args(argv)
    tag = args.part + (f"_{args.split}" if args.part == "accuracy" else "")
    out = Tee(os.path.join(RESULTS, f"potential_{tag}.txt"))
    print(f"load {os.getloadavg()[0]:.2f}; {' '.join(sys.argv)}", file=out)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        {"accuracy": accuracy, "optimize": optimize, "md": md}[args.part](
            args, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
