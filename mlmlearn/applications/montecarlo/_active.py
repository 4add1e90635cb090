"""Paper II's lesson automated: Monte Carlo with the model finds where it must not be trusted.

A model trained on physical MD frames lets Monte Carlo wander into unphysical regions,
whose energies it gets wrong, until those configurations join its training data with their
reference energies (paper II; thesis 3.2). :func:`montecarlo_active_learning` does that in
rounds: MC with the current model, frames picked by a criterion, their reference energies
(spread over joblib's backend, so ``"mpi"`` distributes them), added, refitted.
"""

import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .._checkpoint import load_rounds, save_rounds

__all__ = [
    "AnyOf",
    "BrokenGeometry",
    "FarFromReferences",
    "MonteCarloActiveLearningResult",
    "montecarlo_active_learning",
]


class FarFromReferences:
    """Frames farther from every reference of the model than its references are from each other.

    In the scaled descriptor space of the model (every step of the pipeline before its
    last), a frame is flagged when its distance to the nearest reference exceeds
    ``factor`` times the largest nearest-neighbour distance among the references: the
    model's data never came that close to it.

    Parameters
    ----------
    factor : float, default=1.0
    """

    def __init__(self, factor=1.0):
        self.factor = factor

    def __call__(self, model, frames):
        """Boolean mask of the flagged frames, shape (n_frames,)."""
        from ..._distances import euclidean_distances

        references = model[-1].references_
        R = euclidean_distances(references, references)
        np.fill_diagonal(R, np.inf)
        limit = self.factor * R.min(axis=1).max()
        X = model[:-1].transform(list(frames))
        return euclidean_distances(X, references).min(axis=1) > limit

    def __repr__(self):
        return f"FarFromReferences(factor={self.factor})"


class BrokenGeometry:
    """Frames with a broken bond (:func:`~mlmlearn.applications.analysis.broken_bonds`)."""

    def __call__(self, model, frames):
        from ..analysis import broken_bonds

        return np.array([bool(broken_bonds(f)) for f in frames], dtype=bool)

    def __repr__(self):
        return "BrokenGeometry()"


class AnyOf:
    """Frames flagged by any of ``criteria``."""

    def __init__(self, *criteria):
        self.criteria = criteria

    def __call__(self, model, frames):
        frames = list(frames)
        mask = np.zeros(len(frames), dtype=bool)
        for criterion in self.criteria:
            mask |= criterion(model, frames)
        return mask

    def __repr__(self):
        return f"AnyOf({', '.join(map(repr, self.criteria))})"


@dataclass
class MonteCarloActiveLearningResult:
    """What :func:`montecarlo_active_learning` did.

    Attributes
    ----------
    model : Pipeline
        Fitted on the training structures and every added one.
    added : list of ase.Atoms
        Added structures, their reference energy stored and ``info["round"]``,
        ``info["mc_step"]`` and ``info["model_energy"]`` (eV, before it was added).
    history : list of dict
        Per round: ``"round"``, ``"frames"`` (MC frames sampled), ``"broken_fraction"``,
        ``"flagged"``, ``"added"``, ``"checked"`` (frames with a reference energy: the
        added ones and ``n_check`` evenly spaced others), ``"failed"``,
        ``"energy_rmse"`` (eV per structure, model against reference on the checked
        frames) and ``"energy_rmse_per_atom"``, and the wall times ``"time_mc"``,
        ``"time_reference"`` and ``"time_fit"`` (s).
    converged : bool
        The last round flagged no frame.
    """

    model: object
    added: list = field(default_factory=list)
    history: list = field(default_factory=list)
    converged: bool = False


def _reference_energy(reference, atoms):
    a = atoms.copy()
    a.calc = reference()
    try:
        return float(a.get_potential_energy())
    except Exception:  # noqa: BLE001 - a failed reference (SCF) is recorded, not fatal
        return float("nan")


def montecarlo_active_learning(model, structures, energies, reference, start, *,
                               temperature_K=300.0, rounds=3, n_steps=500, equilibration=100,
                               sample_every=10, criterion=None, max_added=20, n_check=10,
                               n_jobs=None, checkpoint=None, random_state=0, verbose=0):
    """Grow an energy model's data where its own Monte Carlo leaves them (paper II).

    Each round fits ``model`` on ``structures`` and every structure added so far, runs
    Metropolis MC on it from ``start`` (paper II's moves; equilibration, then ``n_steps``
    production steps, every ``sample_every``-th kept), flags frames with ``criterion``,
    computes reference energies of up to ``max_added`` flagged frames (evenly spread over
    the run) and of ``n_check`` evenly spaced frames (the round's reference-energy RMSE),
    and adds the flagged ones. Reference calculations run through joblib
    (``n_jobs``; inside ``joblib.parallel_backend("mpi")`` they spread over MPI ranks).
    The loop ends after ``rounds`` rounds or a round that flags nothing.

    Parameters
    ----------
    model : Pipeline
        An unfitted energy model of whole structures, e.g.
        :func:`~mlmlearn.forcefield.default_energy_model` (cloned every round). MC uses
        :class:`~mlmlearn.applications.montecarlo.IncrementalEnergy` when the model
        allows it, else the model through :class:`~mlmlearn.forcefield.MLMCalculator`.
    structures : sequence of ase.Atoms
    energies : array-like of shape (n_structures,)
        eV.
    reference : callable
        Returns a new ASE calculator of the reference method, e.g.
        ``functools.partial(TBLite, method="GFN1-xTB", charge=-1, verbosity=0)``
        (picklable, for joblib's processes).
    start : ase.Atoms
        The MC start structure of every round (not changed).
    temperature_K : float, default=300.0
    rounds, n_steps, equilibration, sample_every : int
        Defaults 3, 500, 100, 10. Frames are the MC steps whose global number is a
        multiple of ``sample_every`` (keep ``equilibration`` a multiple of it).
    criterion : callable, default=None
        ``criterion(fitted_model, frames)`` → boolean mask. None:
        ``AnyOf(FarFromReferences(), BrokenGeometry())``.
    max_added, n_check : int
    n_jobs : int, default=None
        joblib's meaning.
    checkpoint : str or path, default=None
        A folder: per round the MC trajectory (``round<r>.extxyz`` and its checkpoint)
        and the reference energies as they finish (``round<r>_references.json``); after
        a round the added structures (``added.traj``) and ``state.json``. A run given the
        same folder resumes: finished rounds are read, an interrupted MC run continues,
        and finished reference calculations are not repeated.
    random_state : int, default=0
        Seeds round r's MC with ``[random_state, r]``.
    verbose : int, default=0

    Returns
    -------
    MonteCarloActiveLearningResult

    Raises
    ------
    ValueError
        If ``structures`` and ``energies`` differ in length, or a checkpoint was written
        with other settings.
    """
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import read
    from joblib import Parallel, delayed
    from sklearn.base import clone

    from ...forcefield import MLMCalculator
    from ..analysis import broken_bonds
    from ._engine import MonteCarlo
    from ._incremental import IncrementalEnergy

    structures = list(structures)
    energies = np.asarray(energies, dtype=float)
    if len(structures) != len(energies):
        raise ValueError(f"structures has {len(structures)} entries, energies {len(energies)}")
    criterion = AnyOf(FarFromReferences(), BrokenGeometry()) if criterion is None else criterion
    settings = dict(temperature_K=temperature_K, n_steps=n_steps, equilibration=equilibration,
                    sample_every=sample_every, criterion=repr(criterion), max_added=max_added,
                    n_check=n_check, random_state=random_state, n_structures=len(structures))
    added, history, first = [], [], 0
    if checkpoint is not None:
        history, first, added = load_rounds(checkpoint, settings)

    def fit():
        t0 = time.perf_counter()
        X = structures + added
        y = np.r_[energies, [a.get_potential_energy() for a in added]]
        return clone(model).fit(X, y), time.perf_counter() - t0

    fitted = None
    converged = bool(history) and history[-1]["flagged"] == 0
    for r in range(first, rounds):
        if converged:
            break
        fitted, time_fit = fit()
        # -- Monte Carlo with the current model
        t0 = time.perf_counter()
        atoms = start.copy()
        atoms.calc = None
        try:
            energy = IncrementalEnergy(fitted)
        except ValueError:
            energy = None
            atoms.calc = MLMCalculator(energy_model=fitted)
        trajectory = None if checkpoint is None else os.path.join(checkpoint, f"round{r}.extxyz")
        mc = MonteCarlo(atoms, temperature_K, energy=energy, trajectory=trajectory,
                        write_interval=sample_every, checkpoint_interval=sample_every,
                        random_state=np.random.default_rng([random_state, r]), verbose=verbose)
        mc.equilibrate(equilibration)
        if trajectory is None:
            frames = []
            for k in range(sample_every, n_steps + 1, sample_every):
                mc.run(k)
                frame = atoms.copy()
                frame.calc = None
                frame.info.update(round=r, mc_step=len(mc.energies), model_energy=mc.energy)
                frames.append(frame)
        else:  # the frames of an interrupted run are in its trajectory
            mc.run(n_steps)
            frames = []
            for f in read(trajectory, ":", parallel=False):
                if f.info["phase"] != "production":
                    continue
                frame = f.copy()
                frame.calc = None
                frame.info = {"round": r, "mc_step": int(f.info["mc_step"]),
                              "model_energy": float(f.get_potential_energy())}
                frames.append(frame)
        time_mc = time.perf_counter() - t0
        # -- which frames
        flagged = np.flatnonzero(criterion(fitted, frames))
        chosen = (flagged if len(flagged) <= max_added else
                  flagged[np.linspace(0, len(flagged) - 1, max_added).round().astype(int)])
        checks = np.linspace(0, len(frames) - 1, min(n_check, len(frames))).round().astype(int)
        todo = sorted(set(chosen.tolist()) | set(checks.tolist()))
        # -- reference energies, saved as they finish
        t0 = time.perf_counter()
        done = {}
        ref_path = None if checkpoint is None else os.path.join(checkpoint,
                                                                 f"round{r}_references.json")
        if ref_path is not None and os.path.exists(ref_path):
            with open(ref_path) as fh:
                done = {int(k): v for k, v in json.load(fh).items()}
        missing = [k for k in todo if k not in done]
        batch = max(1, 2 * (n_jobs if n_jobs and n_jobs > 0 else os.cpu_count() or 1))
        for b in range(0, len(missing), batch):
            part = missing[b:b + batch]
            values = Parallel(n_jobs=n_jobs)(delayed(_reference_energy)(reference, frames[k])
                                             for k in part)
            done.update(zip(part, values, strict=True))
            if ref_path is not None:
                with open(ref_path, "w") as fh:
                    json.dump({str(k): v for k, v in done.items()}, fh)
        time_reference = time.perf_counter() - t0
        # -- the round's record and the added frames
        ok = [k for k in todo if np.isfinite(done[k])]
        model_e = np.array([frames[k].info["model_energy"] for k in ok])
        ref_e = np.array([done[k] for k in ok])
        n_atoms = len(start)
        new = []
        for k in chosen:
            if not np.isfinite(done[k]):
                continue
            frame = frames[k].copy()
            frame.calc = SinglePointCalculator(frame, energy=done[k])
            frame.info.update(frames[k].info)
            new.append(frame)
        added = added + new
        rmse = float(np.sqrt(np.mean((model_e - ref_e) ** 2))) if len(ok) else float("nan")
        record = {
            "round": r,
            "frames": len(frames),
            "broken_fraction": float(np.mean([bool(broken_bonds(f)) for f in frames])),
            "flagged": int(len(flagged)),
            "added": len(new),
            "checked": len(todo),
            "failed": int(len(todo) - len(ok)),
            "energy_rmse": rmse,
            "energy_rmse_per_atom": rmse / n_atoms,
            "time_mc": round(time_mc, 2),
            "time_reference": round(time_reference, 2),
            "time_fit": round(time_fit, 2),
        }
        history.append(record)
        converged = record["flagged"] == 0
        if checkpoint is not None:
            save_rounds(checkpoint, settings, history, r + 1, added)
    if fitted is None or not converged or (history and history[-1]["added"]):
        fitted, _ = fit()
    return MonteCarloActiveLearningResult(model=fitted, added=added, history=history,
                                          converged=converged)
