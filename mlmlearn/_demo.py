"""The main job: a ring force field, ML structure optimization, and its GFN2-xTB check."""

import os
import sys
import time
import warnings

import numpy as np

__all__ = ["ring_demo"]

#: where the demo writes its trajectory, table and figures, unless told otherwise
DEFAULT_OUTPUT = "mlmlearn-demo"


def ring_demo(held_out=5, *, stride=8, references=300, steps=200, max_uncertainty=2.0,
              start="md", force_field=None, potential=None, output=DEFAULT_OUTPUT, out=None,
              log=True):
    """Two models of a held-out gold-thiolate ring side by side: the potential and paper IV's.

    Both are trained on the bundled GFN2-xTB ring data of the other ring sizes
    (:func:`~mlmlearn.datasets.training_mask` of
    ``load_gold_thiolate_rings(kind="all")``): every ``stride``-th MD frame and
    step of the reference relaxation paths that converged, the end of every such
    path, and the active-learning frames of those sizes. The conservative
    :class:`~mlmlearn.forcefield.EMLMPotential` (per-atom EMLM energies, forces
    their exact gradient) learns from energies and forces; paper IV's force field
    (per atom type, SOAP → MinMaxScaler → EMLM norms and OAMLM directions with the
    gold-thiolate alignment rules) from ``references`` random environments per
    type, its references. Both are tested on the held-out ring's MD frames (per
    element), then the held-out ring's last 600 K frame is optimized three ways
    with ASE's BFGS: on the potential (fmax 0.05 eV/Å), on paper IV's forces
    (maxstep 0.1 Å, ≤ ``steps`` steps, fmax 0.1 eV/Å) and on GFN2-xTB itself (ASE
    defaults, fmax 0.05 eV/Å): the reference minimum. GFN2-xTB single points along
    both ML trajectories show how far above that minimum each step is.

    Parameters
    ----------
    held_out : int, default=5
        Gold atoms of the held-out ring, 4 to 8.
    stride : int, default=8
        Every ``stride``-th training frame (MD and relaxation steps) is used.
    references : int, default=300
        References per element of the potential (RS-maximin), and per atom type
        of paper IV's norms and directions (random training environments).
    steps : int, default=200
        Step limit of both ML optimizations.
    max_uncertainty : float, default=2.0
        Paper IV's optimization stops when an atom's predicted uncertainty (Å, the
        OAMLM's expected alignment misfit) exceeds this; None never stops on it.
        It also stops, reporting why, when an atom gets a type without a model or
        loses a partner of its alignment rule.
    start : {"md", "built", "minimum"}, default="md"
        The start of the optimizations: the held-out ring's last 600 K MD
        frame; the ring as :func:`~mlmlearn.datasets.gold_thiolate_ring` builds
        it (paper IV's start); or the GFN2-xTB minimum reached from the MD frame
        (how far each model walks away from a true minimum).
    force_field : ForceField, default=None
        A fitted paper IV force field to use instead of fitting one.
    potential : EMLMPotential, default=None
        A fitted potential to use instead of fitting one.
    output : str or path, default="mlmlearn-demo"
        Folder for the ML trajectories (extxyz) and the figures (with the
        ``plot`` extra).
    out : file-like, default=None
        Where the results go; standard output when None.
    log : file-like, True or None, default=True
        Progress: True for standard error, None for none.

    Returns
    -------
    summary : dict
        The numbers printed: per-model accuracy tables (``"table"`` for the
        potential, ``"table_iv"``), GFN2-xTB checks along each optimization
        (``"steps"``/``"energies"``/``"rmsd"`` for the potential, the same with
        ``_iv`` for paper IV's), steps and stop reasons, fit times, and the two
        models (``"potential"``, ``"force_field"``).
    """
    from .__main__ import _stage_log

    out = sys.stdout if out is None else out
    log = _stage_log(log)
    ase_optimize = _require("ase.optimize", "atoms")
    ase_io = _require("ase.io", "atoms")
    TBLite = _require("tblite.ase", "xtb").TBLite
    from ase.calculators.calculator import CalculationFailed
    from threadpoolctl import threadpool_limits

    from .applications.optimize import optimize
    from .atoms import AtomicEnvironments, AtomTypingError, MissingNeighborsError
    from .datasets import (
        gold_thiolate_ring,
        isolated_atom_energies,
        load_gold_thiolate_rings,
        training_mask,
    )
    from .forcefield import (
        EMLMPotential,
        ForceField,
        MLMCalculator,
        UnknownAtomTypeError,
        default_direction_model,
        default_norm_model,
    )
    from .metrics import energy_rmse, force_table

    os.makedirs(output, exist_ok=True)
    n_atoms = 6 * held_out
    log("loading the bundled gold-thiolate ring data (GFN2-xTB MD at 300/600/900 K and "
        "reference relaxations)")
    data = load_gold_thiolate_rings(kind="all")
    held_rows = np.array([len(f) == n_atoms for f in data.frames])
    md = data.kind == "md"
    keep = training_mask(data, held_rows, stride=stride)
    usable = training_mask(data, held_rows)  # every frame a model may learn from
    train = [f for f, k in zip(data.frames, keep, strict=True) if k]
    held = [f for f, h, m in zip(data.frames, held_rows, md, strict=True) if h and m]
    test = held[::10]
    sizes = ", ".join(f"Au{n}" for n in sorted({len(f) // 6 for f in train}))
    n_relax = int(np.sum(keep & (data.kind == "relaxation")))
    n_active = int(np.sum(keep & (data.kind == "active")))
    print(f"gold-thiolate rings: both models trained on the {sizes} rings ({len(train)} frames: "
          f"{len(train) - n_relax - n_active} MD frames and {n_relax} relaxation steps, every "
          f"{stride}th, and {n_active} active-learning frames), Au{held_out}(SCH3){held_out} "
          "held out", file=out, flush=True)
    bars = int(log.bars and log.file is sys.stderr)

    # GFN2-xTB on one thread: below ~50 atoms OpenMP threads cost more than they give
    # (an Au4 ring single point 0.05 s on one thread, seconds with two on busy cores)
    one_thread = threadpool_limits(1)

    pot, fit_pot = potential, 0.0
    if pot is None:
        pot = EMLMPotential(n_references=references,
                            atomic_energies=isolated_atom_energies("GFN2-xTB"), verbose=bars)
        log(f"fitting the potential: {len(train)} structures, {references} references per "
            "element, one linear solve on their energies and forces")
        fit_pot = _fit_noting(pot, train, log)
    ff, fit_iv = force_field, 0.0
    if ff is None:
        # drawn from every usable frame, not only the strided ones: core gold is rare (27
        # environments in the rings, all Au4), and a type with < 10 gets no model
        env = _random_environments(
            [f for f, u in zip(data.frames, usable, strict=True) if u], references)
        ff = ForceField(default_norm_model(references), default_direction_model(references),
                        verbose=bars)
        log(f"fitting paper IV's force field: {len(env)} environments ({references} per atom "
            "type), one EMLM and one OAMLM per type")
        fit_iv = _fit_noting(ff, env, log)
    log(f"fitted in {fit_pot:.0f} s and {fit_iv:.0f} s; testing on {len(test)} held-out frames")

    test_env = AtomicEnvironments(test)
    F_pot = pot.predict_forces(test)
    E_pot = pot.predict(test)
    table = force_table(test_env.forces, F_pot, test_env.symbols, labels=["Au", "S", "C", "H"])
    # frames with an atom of a type without a model (core gold is rare in the rings) cannot
    # be predicted whole by paper IV's force field; they are left out of its table and counted
    modelled = [f for f in test if np.isin(ff.atom_types(f), ff.types_).all()]
    iv_env = AtomicEnvironments(modelled)
    F_iv = ff.predict(iv_env)
    table_iv = force_table(iv_env.forces, F_iv, iv_env.symbols, labels=["Au", "S", "C", "H"])
    e_rmse = energy_rmse(test_env.structure_energies, E_pot, n_atoms=[len(a) for a in test])
    print(f"\nheld-out Au{held_out}(SCH3){held_out}: {len(test)} MD frames of 3 runs", file=out)
    print(f"conservative potential (EMLMPotential, fit {fit_pot:.0f} s); energy RMSE "
          f"{1000 * e_rmse:.2f} meV/atom:", file=out)
    print(table, file=out)
    left = len(test) - len(modelled)
    print(f"paper IV's force field (EMLM norm x OAMLM direction, fit {fit_iv:.0f} s; no energy)"
          + (f", {left} frames with an atom of a type without a model left out" if left else "")
          + ":", file=out)
    print(table_iv, file=out)
    print("(|F| RMSE: of the force norms; angle: force-weighted average angle between predicted "
          "and GFN2-xTB forces, weights |F_ref|²; RMSE and MAE: of the per-atom force-vector "
          "error |F_pred - F_ref|)", file=out, flush=True)

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

    log(f"BFGS on the potential (fmax 0.05 eV/Å, ≤ {steps} steps)")
    trajectory_pot = os.path.join(output, "potential-bfgs.extxyz")
    pot_atoms = start_atoms.copy()
    pot_atoms.calc = MLMCalculator(pot)
    t0 = time.perf_counter()
    with ase_optimize.BFGS(pot_atoms, logfile=None, trajectory=None) as opt:
        frames_pot = [pot_atoms.copy()]
        for _ in log.loop(opt.irun(fmax=0.05, steps=steps), desc="potential BFGS"):
            if opt.nsteps > len(frames_pot) - 1:
                frames_pot.append(pot_atoms.copy())
    converged = bool(np.linalg.norm(pot_atoms.get_forces(), axis=1).max() < 0.05)
    pot_seconds = time.perf_counter() - t0
    ase_io.write(trajectory_pot, frames_pot)
    stop_pot = ("converged at fmax 0.05 eV/Å on its forces" if converged
                else f"not converged after {steps} steps")

    log(f"ML-BFGS with paper IV's force field (maxstep 0.1 Å, ≤ {steps} steps, fmax 0.1 eV/Å)")
    ml_atoms = start_atoms.copy()
    t0 = time.perf_counter()
    trajectory = os.path.join(output, "ml-bfgs.extxyz")
    try:
        result = optimize(ml_atoms, MLMCalculator(ff), fmax=0.1, steps=steps, maxstep=0.1,
                          max_uncertainty=max_uncertainty, trajectory=trajectory)
        stop_iv = {"converged": "converged at fmax 0.1 eV/Å on ML forces",
                   "steps": f"not converged after {steps} steps",
                   "uncertainty": f"stopped: predicted uncertainty above {max_uncertainty} Å"}[
                       result.stop_reason]
    except (UnknownAtomTypeError, MissingNeighborsError, AtomTypingError) as exc:
        # the structure left what the force field can describe (a type without a model,
        # a broken bond): the frames so far are in the trajectory
        stop_iv = f"stopped: {exc}"
    iv_seconds = time.perf_counter() - t0
    frames_iv = ase_io.read(trajectory, ":")

    def check(frames, desc):
        steps_checked = sorted(set(range(0, len(frames), 5)) | {len(frames) - 1})
        energies, rmsds, failed = [], [], []
        for i in log.loop(steps_checked, desc=desc):
            atoms = frames[i].copy()
            atoms.calc = gfn2()
            try:
                energies.append(atoms.get_potential_energy() - e_min)
            except CalculationFailed:  # e.g. no SCF convergence on a distorted ML geometry
                energies.append(np.nan)
                failed.append(i)
            rmsds.append(_heavy_rmsd(atoms, reference))
        return steps_checked, energies, rmsds, failed

    log(f"GFN2-xTB single points along both ML trajectories ({len(frames_pot)} and "
        f"{len(frames_iv)} frames, every 5th)")
    steps_pot, e_pot, r_pot, failed_pot = check(frames_pot, "GFN2 single points (potential)")
    steps_iv, e_iv, r_iv, failed_iv = check(frames_iv, "GFN2 single points (paper IV)")

    print(f"\nBFGS of the held-out ring {where} (GFN2-xTB BFGS from the "
          f"{'MD frame' if start == 'minimum' else 'same start'}: {reference_steps} steps to "
          f"fmax 0.05 eV/Å{reference_note}; that start is {e_start - e_min:.2f} eV above its "
          "minimum)", file=out)
    print(f"  potential (ASE BFGS, fmax 0.05 eV/Å): {len(frames_pot) - 1} steps in "
          f"{pot_seconds:.1f} s, {stop_pot}", file=out)
    print(f"  paper IV's FF (ASE BFGS, maxstep 0.1 Å, fmax 0.1 eV/Å): {len(frames_iv) - 1} "
          f"steps in {iv_seconds:.1f} s, {stop_iv}", file=out)
    print("GFN2-xTB energy above that GFN2 minimum (eV) and heavy-atom RMSD to it (Å, after "
          "superposition) every 5th step and at the last:", file=out)
    print(f"{'step':>6}{'potential E':>14}{'RMSD':>8}{'paper IV E':>14}{'RMSD':>8}", file=out)
    rows_pot = dict(zip(steps_pot, zip(e_pot, r_pot, strict=True), strict=True))
    rows_iv = dict(zip(steps_iv, zip(e_iv, r_iv, strict=True), strict=True))

    def cell(row):
        return f"{'':>14}{'':>8}" if row is None else f"{row[0]:>14.3f}{row[1]:>8.3f}"

    for step in sorted(set(rows_pot) | set(rows_iv)):
        print(f"{step:>6}{cell(rows_pot.get(step))}{cell(rows_iv.get(step))}", file=out)
    for name, failed in (("potential", failed_pot), ("paper IV", failed_iv)):
        if failed:
            print(f"(no GFN2-xTB energy at {name} steps {failed}: the SCF did not converge)",
                  file=out)
    side = "above" if e_pot[-1] >= 0 else "below"
    print(f"the potential ends {abs(e_pot[-1]):.4f} eV {side} the GFN2-xTB minimum, "
          f"{r_pot[-1]:.3f} Å from it; paper IV's force field has no energy to descend: its "
          f"lowest check is {np.nanmin(e_iv):.2f} eV above (step "
          f"{steps_iv[int(np.nanargmin(e_iv))]}), its last {e_iv[-1]:.2f} eV (step "
          f"{steps_iv[-1]}, where it stopped)", file=out, flush=True)

    one_thread.restore_original_limits()
    figures = _figures(output, test_env.forces, F_pot, test_env.symbols,
                       [steps_pot, steps_iv], [e_pot, e_iv], reference_trace, log)
    where = os.path.abspath(output)
    print(f"\nwritten to {where}: potential-bfgs.extxyz, ml-bfgs.extxyz (with its resume "
          "checkpoint ml-bfgs.extxyz.checkpoint.npz)" + "".join(f", {f}" for f in figures),
          file=out, flush=True)
    log("done")
    return {"table": table, "table_iv": table_iv, "energy_rmse": e_rmse,
            "steps": steps_pot, "energies": e_pot, "rmsd": r_pot, "potential_stop": stop_pot,
            "steps_iv": steps_iv, "energies_iv": e_iv, "rmsd_iv": r_iv, "ml_stop": stop_iv,
            "potential_steps": len(frames_pot) - 1, "ml_steps": len(frames_iv) - 1,
            "reference_steps": reference_steps, "fit_seconds": fit_pot,
            "fit_seconds_iv": fit_iv, "potential": pot, "force_field": ff}


def _fit_noting(model, X, log):
    """Fit ``model`` on ``X``, its warnings going to ``log`` as notes; the wall time (s)."""
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X)
    for w in caught:
        log(f"note: {w.message}")
    return time.perf_counter() - t0


def _random_environments(frames, k, seed=0):
    """``k`` random environments of each gold-thiolate atom type of ``frames``.

    Paper IV keeps its K training environments as references; a random draw stands in
    for RS-maximin, which is slow on 2 030-dimensional SOAP rows of tens of thousands of
    environments.
    """
    from .atoms import AtomicEnvironments
    from .forcefield import GOLD_THIOLATE_FAMILIES

    env = AtomicEnvironments(frames)
    families = np.array([GOLD_THIOLATE_FAMILIES[t] for t in env.atom_types])
    rng = np.random.default_rng(seed)
    rows = np.concatenate([
        rng.choice(np.flatnonzero(families == t), size=min(k, int((families == t).sum())),
                   replace=False)
        for t in np.unique(families)])
    return env[np.sort(rows)]


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


def _heavy_rmsd(atoms, reference):
    from ase.build import minimize_rotation_and_translation

    heavy = np.flatnonzero(reference.numbers != 1)
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
            [np.asarray(e) for e in energies] + [reference_trace],
            steps=[np.asarray(s) for s in steps] + [np.arange(len(reference_trace))],
            labels=["BFGS on the potential (GFN2-xTB single points)",
                    "BFGS on paper IV's forces (GFN2-xTB single points)", "GFN2-xTB BFGS"],
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
