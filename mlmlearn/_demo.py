"""The main job: a ring force field, ML structure optimization, and its GFN2-xTB check."""

import os
import sys
import time
import warnings

import numpy as np

__all__ = ["ring_demo"]

#: where the demo writes its trajectory, table and figures, unless told otherwise
DEFAULT_OUTPUT = "mlmlearn-demo"


def ring_demo(held_out=5, *, stride=16, references=300, steps=200, max_uncertainty=2.0,
              start="md", force_field=None, output=DEFAULT_OUTPUT, out=None, log=True):
    """Train a gold-thiolate force field with one ring size held out and optimize that ring.

    Paper IV's force field (per atom type, SOAP → MinMaxScaler → EMLM norms and
    OAMLM directions with the gold-thiolate alignment rules) is fitted on every
    ``stride``-th frame of the bundled GFN2-xTB ring MD runs of the other ring
    sizes. It is tested on the held-out ring's frames (paper IV's per-type table),
    then the held-out ring's last 600 K frame is optimized with ML forces on
    ASE's BFGS (maxstep 0.1 Å, ≤ ``steps`` steps, fmax 0.1 eV/Å) and, from the
    same start, with GFN2-xTB forces (ASE's defaults, fmax 0.05 eV/Å).
    GFN2-xTB single points along the ML trajectory show how far above the GFN2
    minimum each step is and its heavy-atom RMSD to it.

    Parameters
    ----------
    held_out : int, default=5
        Gold atoms of the held-out ring, 4 to 8.
    stride : int, default=16
        Every ``stride``-th training frame is used, and every environment of a
        type that would otherwise be rare (core gold, 27 environments in all).
    references : int, default=300
        References per atom type (RS-maximin), for norms and directions.
    steps : int, default=200
        Step limit of the ML optimization.
    max_uncertainty : float, default=2.0
        The ML optimization stops when an atom's predicted uncertainty (Å, the
        OAMLM's expected alignment misfit) exceeds this; on held-out ring frames
        it stays below about 1.5 Å. None never stops on it. The optimization also
        stops, reporting why, when an atom gets a type without a model or loses a
        partner of its alignment rule.
    start : {"md", "built", "minimum"}, default="md"
        The start of both optimizations: the held-out ring's last 600 K MD
        frame; the ring as :func:`~mlmlearn.datasets.gold_thiolate_ring` builds
        it (paper IV's start); or the GFN2-xTB minimum reached from the MD frame
        (how far ML-BFGS walks away from a true minimum).
    force_field : ForceField, default=None
        A fitted force field to use instead of fitting one (its training data
        are then not described).
    output : str or path, default="mlmlearn-demo"
        Folder for the ML trajectory (extxyz, with its resume checkpoint) and the figures (with
        the ``plot`` extra).
    out : file-like, default=None
        Where the results go; standard output when None.
    log : file-like, True or None, default=True
        Progress: True for standard error, None for none.

    Returns
    -------
    summary : dict
        The numbers printed (accuracy table, energies, RMSDs, steps) and the
        ``force_field``.
    """
    from .__main__ import _stage_log

    out = sys.stdout if out is None else out
    log = _stage_log(log)
    ase_optimize = _require("ase.optimize", "atoms")
    ase_io = _require("ase.io", "atoms")
    TBLite = _require("tblite.ase", "xtb").TBLite
    from ase.build import minimize_rotation_and_translation
    from ase.calculators.calculator import CalculationFailed
    from threadpoolctl import threadpool_limits

    from .applications.optimize import optimize
    from .atoms import AtomicEnvironments, AtomTypingError, MissingNeighborsError
    from .datasets import gold_thiolate_ring, load_gold_thiolate_rings
    from .forcefield import (
        ForceField,
        MLMCalculator,
        UnknownAtomTypeError,
        default_direction_model,
        default_norm_model,
    )
    from .metrics import force_table

    os.makedirs(output, exist_ok=True)
    n_atoms = 6 * held_out
    log("loading the bundled gold-thiolate ring data (GFN2-xTB MD, 300/600/900 K)")
    data = load_gold_thiolate_rings()
    train = [f for f in data.frames if len(f) != n_atoms][::stride]
    held = [f for f in data.frames if len(f) == n_atoms]
    test = held[::10]
    sizes = ", ".join(f"Au{n}" for n in sorted({len(f) // 6 for f in train}))
    print(f"gold-thiolate rings: force field trained on the {sizes} rings ({len(train)} frames, "
          f"every {stride}th, plus all environments of the types that stride leaves rare), "
          f"Au{held_out}(SCH3){held_out} held out", file=out, flush=True)

    ff, fit_seconds = force_field, 0.0
    if ff is None:
        env = _training_environments(data.frames, n_atoms, stride)
        ff = ForceField(default_norm_model(references), default_direction_model(references),
                        verbose=int(log.bars and log.file is sys.stderr))
        log(f"fitting the force field: {len(env)} environments, {references} references per "
            "type (RS-maximin), one EMLM and one OAMLM per atom type")
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ff.fit(env)
        fit_seconds = time.perf_counter() - t0
        for w in caught:
            log(f"note: {w.message}")
    log(f"fitted in {fit_seconds:.0f} s; testing on {len(test)} held-out frames")

    # frames with an atom of a type without a model (core gold is rare in the rings) cannot
    # be predicted whole; they are left out of the table and counted
    modelled = [f for f in test
                if np.isin(ff.atom_types(f), ff.types_).all()]
    test_env = AtomicEnvironments(modelled)
    predicted = ff.predict(test_env)
    table = force_table(test_env.forces, predicted, ff.atom_types(test_env))
    counts = ", ".join(f"{t} {n}" + ("" if t in ff.types_ else " (no model)")
                       for t, n in ff.n_samples_.items())
    print(f"\ntraining environments per type: {counts} (fit {fit_seconds:.0f} s)", file=out)
    left = len(test) - len(modelled)
    print(f"held-out Au{held_out}(SCH3){held_out}, {len(modelled)} frames of 3 runs"
          + (f" ({left} with an atom of a type without a model left out)" if left else "")
          + ":", file=out)
    print(table, file=out)
    print("(angle: force-weighted average angle between predicted and GFN2-xTB forces, weights "
          "|F_ref|²; RMSE and MAE: of the per-atom force-vector error |F_pred - F_ref|)",
          file=out, flush=True)

    md_start = [f for f in held if f.info["temperature_K"] == 600.0][-1].copy()
    md_start.calc = None
    charge = int(md_start.info.get("charge", 0))
    if start == "built":
        start_atoms = gold_thiolate_ring(held_out)
        where = "as gold_thiolate_ring builds it"
    elif start in ("md", "minimum"):
        start_atoms = md_start
        where = "from its last 600 K frame"
    else:
        raise ValueError(f"start={start!r}; expected 'md', 'built' or 'minimum'")

    def gfn2():
        return TBLite(method="GFN2-xTB", charge=charge, verbosity=0)

    # GFN2-xTB on one thread: below ~50 atoms OpenMP threads cost more than they give
    # (an Au4 ring single point 0.05 s on one thread, seconds with two on busy cores)
    one_thread = threadpool_limits(1)

    log("GFN2-xTB BFGS from the same start (ASE defaults, fmax 0.05 eV/Å): the reference minimum")
    reference = start_atoms.copy()
    reference.calc = gfn2()
    e_start = reference.get_potential_energy()
    reference_trace, reference_note = [], ""
    good = reference.positions.copy()
    reference_steps = 0
    for maxstep in (0.2, 0.05):  # ASE's default; shorter steps after an SCF failure
        opt = ase_optimize.BFGS(reference, logfile=None, maxstep=maxstep)
        try:
            for _ in log.loop(opt.irun(fmax=0.05, steps=500 - reference_steps),
                              desc="GFN2 BFGS"):
                reference_trace.append(reference.get_potential_energy())
                good = reference.positions.copy()
            reference_steps += opt.nsteps
            break
        except CalculationFailed:
            # a BFGS step into a geometry where the SCF does not converge (seen once, Au6
            # from its 600 K frame at step 109): back to the last good one, shorter steps
            reference_steps += opt.nsteps
            reference_trace.pop()  # irun yields the restart's start again
            reference_note += (f" (its SCF failed after step {reference_steps - 1}; continued "
                               "from there with maxstep 0.05 Å)")
            reference.positions = good
    reference_trace = np.array(reference_trace)
    e_min = reference.get_potential_energy()
    reference_trace = reference_trace - e_min
    if start == "minimum":
        start_atoms = reference.copy()
        start_atoms.calc = None
        where = "from the GFN2-xTB minimum"

    log(f"ML-BFGS with the force field (maxstep 0.1 Å, ≤ {steps} steps, fmax 0.1 eV/Å)")
    ml_atoms = start_atoms.copy()
    t0 = time.perf_counter()
    trajectory = os.path.join(output, "ml-bfgs.extxyz")
    try:
        result = optimize(ml_atoms, MLMCalculator(ff), fmax=0.1, steps=steps, maxstep=0.1,
                          max_uncertainty=max_uncertainty, trajectory=trajectory)
        stop = {"converged": "converged at fmax 0.1 eV/Å on ML forces",
                "steps": f"not converged after {steps} steps",
                "uncertainty": f"stopped: predicted uncertainty above {max_uncertainty} Å"}[
                    result.stop_reason]
    except (UnknownAtomTypeError, MissingNeighborsError, AtomTypingError) as exc:
        # the structure left what the force field can describe (a type without a model,
        # a broken bond): the frames so far are in the trajectory
        stop = f"stopped: {exc}"
    ml_seconds = time.perf_counter() - t0
    frames = ase_io.read(trajectory, ":")
    n_ml_steps = len(frames) - 1
    heavy = np.flatnonzero(start_atoms.numbers != 1)
    check = sorted(set(range(0, len(frames), 5)) | {len(frames) - 1})
    log(f"GFN2-xTB single points at {len(check)} of the {len(frames)} ML-BFGS steps")
    energies, rmsds = [], []
    failed = []
    for i in log.loop(check, desc="GFN2 single points"):
        atoms = frames[i].copy()
        atoms.calc = gfn2()
        try:
            energies.append(atoms.get_potential_energy() - e_min)
        except CalculationFailed:  # e.g. no SCF convergence on a distorted ML geometry
            energies.append(np.nan)
            failed.append(i)
        rmsds.append(_heavy_rmsd(atoms, reference, heavy, minimize_rotation_and_translation))

    print(f"\nML-BFGS of the held-out ring {where}: {n_ml_steps} steps in "
          f"{ml_seconds:.1f} s, {stop}", file=out)
    print(f"GFN2-xTB BFGS from the {'MD frame' if start == 'minimum' else 'same start'}: "
          f"{reference_steps} steps to fmax 0.05 eV/Å{reference_note}; that start is "
          f"{e_start - e_min:.2f} eV above this minimum", file=out)
    print("GFN2-xTB single points along the ML-BFGS trajectory, against that GFN2 minimum:",
          file=out)
    print(f"{'step':>6}{'E_GFN2 - E_min (eV)':>22}{'heavy-atom RMSD to it (Å)':>28}", file=out)
    for i, e, r in zip(check, energies, rmsds, strict=True):
        print(f"{i:>6}{e:>22.3f}{r:>28.3f}", file=out)
    if failed:
        print(f"(no GFN2-xTB energy at steps {failed}: the SCF did not converge)", file=out)
    drops = np.diff(energies)
    monotonic = bool(np.all(drops[~np.isnan(drops)] <= 0))
    lowest = int(np.nanargmin(energies))
    verdict = (
        "the GFN2 energy fell at every check" if monotonic else
        f"the ML forces first lowered the GFN2 energy, from {energies[0]:.2f} to "
        f"{energies[lowest]:.2f} eV above the minimum (step {check[lowest]}), then raised it to "
        f"{energies[-1]:.2f} eV. Forces predicted atom by atom are not the gradient of one "
        "energy, and their errors (the table's RMSE) accumulate along an optimization: the "
        "structure of the lowest check is the ML result to keep, and a reference calculation "
        "has to finish it (mlmlearn.applications.hybrid.hybrid_optimize)")
    print(verdict, file=out, flush=True)

    one_thread.restore_original_limits()
    figures = _figures(output, test_env.forces, predicted, ff.atom_types(test_env),
                       check, energies, reference_trace, log)
    where = os.path.abspath(output)
    print(f"\nwritten to {where}: ml-bfgs.extxyz" + "".join(f", {f}" for f in figures),
          file=out, flush=True)
    log("done")
    return {"table": table, "steps": check, "energies": energies, "rmsd": rmsds,
            "reference_steps": reference_steps, "ml_steps": n_ml_steps, "ml_stop": stop,
            "fit_seconds": fit_seconds, "force_field": ff}


def _training_environments(frames, held_out_atoms, stride, rare=100):
    """Every ``stride``-th training frame, plus every environment of a rare type.

    Core gold is rare in the rings (27 environments, all in the Au4 runs): a stride would
    leave too few for a model (:class:`~mlmlearn.forcefield.ForceField`'s ``min_samples``),
    so types with fewer than ``rare`` environments in the strided frames keep all of theirs.
    """
    from .atoms import AtomicEnvironments
    from .forcefield import GOLD_THIOLATE_FAMILIES

    train = [f for f in frames if len(f) != held_out_atoms]
    env = AtomicEnvironments(train)
    families = np.array([GOLD_THIOLATE_FAMILIES[t] for t in env.atom_types])
    strided = np.isin(env.structure_index, np.arange(0, len(train), stride))
    keep = strided.copy()
    for family in np.unique(families):
        if np.sum(strided & (families == family)) < rare:
            keep |= families == family
    return env[np.flatnonzero(keep)]


def _heavy_rmsd(atoms, reference, heavy, minimize_rotation_and_translation):
    a, b = atoms[heavy], reference[heavy]
    a.calc = b.calc = None
    minimize_rotation_and_translation(b, a)
    return float(np.sqrt(np.mean(np.sum((a.positions - b.positions) ** 2, axis=1))))


def _figures(output, y_true, y_pred, types, steps, energies, reference_trace, log):
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        log("figures skipped: they need the plot extra (pip install \".[plot]\")")
        return []
    from .plotting import plot_angle_vs_norm, plot_energy_trace, plot_force_parity

    names = []
    for name, figure in (
        ("energy.png", plot_energy_trace(
            [np.asarray(energies), reference_trace],
            steps=[np.asarray(steps), np.arange(len(reference_trace))],
            labels=["ML-BFGS (GFN2-xTB single points)", "GFN2-xTB BFGS"],
            reference_minimum=0.0)),
        ("parity.png", plot_force_parity(y_true, y_pred, types)),
        ("angles.png", plot_angle_vs_norm(y_true, y_pred, types)),
    ):
        figure.savefig(os.path.join(output, name), dpi=120, bbox_inches="tight")
        names.append(name)
    return names


def _require(module, extra):
    from ._optional import import_optional

    return import_optional(module, extra, purpose="the demo (mlmlearn demo)")
