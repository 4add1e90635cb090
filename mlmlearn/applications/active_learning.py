"""Active learning of a potential: ML molecular dynamics checked by reference single points.

A potential learns only the regions its training data visited. Molecular dynamics on the
potential itself finds the regions it gets wrong: every ``check_every`` steps a reference
single point is computed, and where the potential's forces are off by more than
``force_threshold`` the structure joins the training data (with its reference energy and
forces) and that trajectory stops. The potential is refitted after each round; the loop
ends when a round finds nothing to add.
"""

from dataclasses import dataclass, field

import numpy as np

from ._checkpoint import load_rounds, save_rounds

__all__ = ["ActiveLearningResult", "active_learning"]


@dataclass
class ActiveLearningResult:
    """What :func:`active_learning` did.

    Attributes
    ----------
    potential : EMLMPotential
        Fitted on the training structures and every added one.
    added : list of ase.Atoms
        Structures added, with their reference energy and forces stored
        (``SinglePointCalculator``) and ``info["round"]``, ``info["start"]``,
        ``info["step"]``, ``info["force_rmse"]`` (the potential's error there,
        eV/Å, before it was added) and ``info["relaxed"]`` (True for a minimum of
        the potential found with ``relax_fmax``, False for an MD frame).
    history : list of dict
        Per round: ``"round"``, ``"checked"`` (reference single points),
        ``"added"``, ``"failed"`` (reference calculations that raised),
        ``"force_rmse"`` (the potential's force RMSE at every check, eV/Å) and
        ``"steps"`` (MD steps run per start); with ``relax_fmax``, also
        ``"relax_force_rmse"`` (at each relaxed minimum), ``"relax_reference_fmax"``
        (the reference's largest atomic force there) and ``"relax_added"``.
    converged : bool
        A round ran every trajectory to its end without adding a structure (and
        without a failed reference calculation).
    """

    potential: object
    added: list = field(default_factory=list)
    history: list = field(default_factory=list)
    converged: bool = False


def active_learning(
    potential,
    structures,
    reference,
    starts,
    *,
    rounds=4,
    temperature_K=600.0,
    n_steps=2000,
    timestep=1.0,
    friction=0.01,
    check_every=50,
    force_threshold=0.2,
    relax_fmax=None,
    relax_steps=500,
    relax_max_force=None,
    checkpoint=None,
    random_state=0,
    verbose=0,
):
    """Grow a potential's training data where its own MD finds it wrong.

    Each round fits ``potential`` on ``structures`` plus everything added so
    far, then runs Langevin MD on it (ASE's ``Langevin``) from every start. Every
    ``check_every`` steps the structure gets a reference single point; if the
    potential's force RMSE against it (:func:`~mlmlearn.metrics.force_rmse`)
    exceeds ``force_threshold``, the structure is added and that trajectory
    ends. The loop stops after ``rounds`` rounds or after a round that adds
    nothing.

    Parameters
    ----------
    potential : EMLMPotential
        Cloned and fitted in every round (the argument is not changed).
    structures : sequence of ase.Atoms
        Training structures with reference energies and forces.
    reference : callable
        ``reference()`` returns a new ASE calculator of the reference method,
        e.g. ``lambda: TBLite(method="GFN2-xTB", verbosity=0)``.
    starts : sequence of ase.Atoms
        Start structures of the MD runs (never changed).
    rounds : int, default=4
    temperature_K : float, default=600.0
    n_steps : int, default=2000
        MD steps per start and round.
    timestep : float, default=1.0
        fs.
    friction : float, default=0.01
        Langevin friction, 1/fs.
    check_every : int, default=50
        Steps between reference single points.
    force_threshold : float, default=0.2
        eV/Å. Held-out MD frames of the bundled rings have force RMSEs near
        0.06 eV/Å; regions the potential has not learnt, several times that.
    relax_fmax : float or None, default=None
        Also probe the potential's minima: after each trajectory, its last
        structure is relaxed on the potential (ASE's BFGS to this fmax, eV/Å, at
        most ``relax_steps`` steps) and the minimum gets a reference single point,
        joining the data like an MD frame when its force RMSE exceeds
        ``force_threshold``. MD at temperature rarely visits the basins a relaxation
        ends in, and a potential can order them wrongly (the bundled rings' compact
        Au5 minima).
    relax_steps : int, default=500
    relax_max_force : float or None, default=None
        eV/Å. A minimum of the potential also joins the data when the reference's
        largest atomic force there exceeds this: the potential's minimum is then no
        minimum of the reference, however small the force RMSE (a wrongly ordered basin
        shows as a few large forces on the atoms that should move).
    checkpoint : str or path, default=None
        A folder: after every round the added structures (``added.traj``) and
        the round reached (``state.json``) are written there, and a run given
        the same folder continues after the last finished round from exactly
        the stored state (every trajectory's random stream is seeded by
        ``random_state``, the round and the start). It agrees with an
        uninterrupted run as far as the reference does with itself: tblite's
        energies of identical positions differ between calls in the last digits
        (about 1e-13 eV), and MD carries such differences into later rounds. ``rounds`` may
        differ from the checkpoint's: a larger value continues a finished
        loop; every other setting must match.
    random_state : int, default=0
    verbose : int, default=0
        Progress bars when > 0.

    Returns
    -------
    result : ActiveLearningResult

    Raises
    ------
    ValueError
        If ``starts`` is empty, or a checkpoint was written with other settings.
    """
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.optimize import BFGS
    from sklearn.base import clone

    from .._progress import progress
    from ..forcefield import MLMCalculator
    from ..metrics import force_rmse

    starts = list(starts)
    if not starts:
        raise ValueError("starts is empty: active learning needs at least one MD start")
    settings = dict(temperature_K=temperature_K, n_steps=n_steps,
                    timestep=timestep, friction=friction, check_every=check_every,
                    force_threshold=force_threshold, random_state=random_state,
                    n_starts=len(starts))
    if relax_fmax is not None:  # absent otherwise: checkpoints written before it still match
        settings.update(relax_fmax=relax_fmax, relax_steps=relax_steps)
        if relax_max_force is not None:
            settings.update(relax_max_force=relax_max_force)
    added, history, first = [], [], 0
    if checkpoint is not None:
        history, first, added = load_rounds(checkpoint, settings, stopping=("rounds",))

    model = None
    converged = bool(history) and history[-1]["added"] == 0 and history[-1]["failed"] == 0
    for r in range(first, rounds):
        if converged:
            break
        model = clone(potential).fit(list(structures) + added)
        record = {"round": r, "checked": 0, "added": 0, "failed": 0, "force_rmse": [],
                  "steps": []}
        if relax_fmax is not None:
            record.update(relax_force_rmse=[], relax_added=0)
        for s, start in enumerate(progress(starts, verbose=verbose, desc=f"round {r}")):
            rng = np.random.default_rng([random_state, r, s])
            atoms = start.copy()
            atoms.calc = MLMCalculator(model)
            MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
            Stationary(atoms)
            dyn = Langevin(atoms, timestep * units.fs, temperature_K=temperature_K,
                           friction=friction / units.fs, rng=rng)
            step = 0
            while step < n_steps:
                dyn.run(check_every)
                step += check_every
                record["checked"] += 1
                results = _reference_results(atoms, reference)
                if results is None:  # any failure of the reference ends the run
                    record["failed"] += 1
                    break
                energy, forces = results
                error = force_rmse(forces, atoms.get_forces())
                record["force_rmse"].append(float(error))
                if error > force_threshold:
                    added.append(_labelled(atoms, energy, forces, round=r, start=s, step=step,
                                           force_rmse=float(error), relaxed=False))
                    record["added"] += 1
                    break
            record["steps"].append(step)
            if relax_fmax is None:
                continue
            relaxed = atoms.copy()
            relaxed.calc = MLMCalculator(model)
            BFGS(relaxed, logfile=None).run(fmax=relax_fmax, steps=relax_steps)
            record["checked"] += 1
            results = _reference_results(relaxed, reference)
            if results is None:
                record["failed"] += 1
                continue
            energy, forces = results
            error = force_rmse(forces, relaxed.get_forces())
            record["relax_force_rmse"].append(float(error))
            largest = float(np.linalg.norm(forces, axis=1).max())
            record.setdefault("relax_reference_fmax", []).append(largest)
            if error > force_threshold or (relax_max_force is not None
                                           and largest > relax_max_force):
                added.append(_labelled(relaxed, energy, forces, round=r, start=s, step=step,
                                       force_rmse=float(error), relaxed=True))
                record["added"] += 1
                record["relax_added"] += 1
        history.append(record)
        converged = record["added"] == 0 and record["failed"] == 0
        if checkpoint is not None:
            save_rounds(checkpoint, settings, history, r + 1, added)
    if model is None or not converged or history[-1]["added"]:
        model = clone(potential).fit(list(structures) + added)
    return ActiveLearningResult(potential=model, added=added, history=history,
                                converged=converged)


def _reference_results(atoms, reference):
    """(energy, forces) of a copy of ``atoms`` by a new ``reference()`` calculator; None if
    it raised (an SCF that does not converge is a result of the loop, not an error)."""
    probe = atoms.copy()
    probe.calc = reference()
    try:
        return probe.get_potential_energy(), probe.get_forces()
    except Exception:  # noqa: BLE001
        return None


def _labelled(atoms, energy, forces, **info):
    """A copy of ``atoms`` carrying the reference ``energy`` and ``forces`` and ``info``."""
    from ase.calculators.singlepoint import SinglePointCalculator

    frame = atoms.copy()
    frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
    frame.info.update(info)
    return frame
