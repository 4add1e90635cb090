"""Structure optimization on ASE's BFGS: part-wise schedules, Hessian resets, resumable runs.

:func:`optimize` drives ASE's own ``BFGS`` (no new quasi-Newton code) with what
paper IV used on top of it for machine-learned forces (section III D): a small
``maxstep`` (0.05–0.1 Å), a step limit, the Hessian approximation reset to its
initial value every n steps, and part-wise schedules — the ligand shell (unit
and half-unit gold, S, C, H) for n₁ steps with the gold core held by ASE's
``FixAtoms``, then the core for n₂ steps with the shell held, alternating. Every
frame goes to an extended-XYZ trajectory, and a checkpoint next to it lets an
interrupted run continue to exactly the structure the uninterrupted run reaches.
An optional uncertainty threshold stops a part where the calculator's per-atom
uncertainty says the forces are no longer trustworthy.

It runs any ASE calculator, including one with forces and no energy (through
:class:`~mlmlearn.forcefield.ForcesOnly`: the energy is logged as
``nan`` and recorded as NaN, never invented).
"""

import dataclasses
import json
import math
import numbers
import os

import numpy as np

from .._progress import progress_bar
from ._checkpoint import (
    START_TOLERANCE,
    ResumeError,
    check_settings,
    check_start,
    check_trajectory,
    load_checkpoint,
    save_checkpoint,
)

__all__ = ["optimize", "OptimizationResult", "ResumeError", "SHELL_TYPES", "CORE_TYPES"]

#: Gold-thiolate types of the ligand shell (paper IV): unit and half-unit gold, S, C, H.
SHELL_TYPES = ("Au_unit", "Au_half_unit", "S", "C", "H")
#: Gold-thiolate types of the core (paper IV): core gold.
CORE_TYPES = ("Au_core",)

_NAMED_PARTS = {"all": None, "shell": SHELL_TYPES, "core": CORE_TYPES}
_CHECKPOINT_FORMAT = "mlmlearn.applications.optimize/1"
_TRAJECTORY_SUFFIXES = (".extxyz", ".xyz")


@dataclasses.dataclass(eq=False)
class OptimizationResult:
    """What :func:`optimize` did, frame by frame.

    Frame 0 is the start structure, frame k the structure after step k; every
    per-frame array has ``n_steps + 1`` entries.

    Attributes
    ----------
    atoms : ase.Atoms
        The final structure (Å), a copy of the input with the calculator attached
        and the input's own constraints (the schedule's ``FixAtoms`` removed).
    converged : bool
        Whether the largest force on the moving atoms fell below ``fmax``.
    stop_reason : {"converged", "steps", "uncertainty"}
        Why the run stopped: converged; the step limit; or every part that was not
        converged stopped by ``max_uncertainty``.
    n_steps : int
        BFGS steps taken.
    fmax : ndarray of shape (n_steps + 1,)
        Largest force norm (eV/Å) over the moving atoms at each frame, after the
        input's own constraints; the convergence criterion.
    energies : ndarray of shape (n_steps + 1,)
        The calculator's energy (eV) at each frame, NaN where it has none.
    max_uncertainty : ndarray of shape (n_steps + 1,)
        Largest per-atom ``results["uncertainty"]`` of the calculator (Å) over the
        moving atoms at each frame, NaN where it gives none.
    parts : ndarray of str of shape (n_steps + 1,)
        The part whose step produced each frame (``"start"`` for frame 0).
    rounds : ndarray of int of shape (n_steps + 1,)
        The round (1, 2, …: consecutive steps of one part) that produced each frame
        (0 for frame 0).
    hessian_resets : ndarray of int
        Frames at which the Hessian approximation was reset to ``alpha`` times the
        identity: the step after such a frame starts from it. A reset at the last
        frame of a run stopped by the step limit takes effect if it is continued.
    uncertainty_stops : list of (int, str)
        ``(frame, part)`` where ``max_uncertainty`` stopped a part.
    trajectory : str or None
        The extended-XYZ trajectory written.
    checkpoint : str or None
        The checkpoint next to it (``trajectory + ".checkpoint.npz"``).
    """

    atoms: object = dataclasses.field(repr=False)
    converged: bool
    stop_reason: str
    n_steps: int
    fmax: np.ndarray = dataclasses.field(repr=False)
    energies: np.ndarray = dataclasses.field(repr=False)
    max_uncertainty: np.ndarray = dataclasses.field(repr=False)
    parts: np.ndarray = dataclasses.field(repr=False)
    rounds: np.ndarray = dataclasses.field(repr=False)
    hessian_resets: np.ndarray = dataclasses.field(repr=False)
    uncertainty_stops: list = dataclasses.field(repr=False)
    trajectory: str = None
    checkpoint: str = None


def optimize(
    atoms,
    calculator=None,
    *,
    fmax=0.05,
    steps=200,
    maxstep=0.1,
    alpha=70.0,
    schedule=None,
    hessian_reset=None,
    max_uncertainty=None,
    trajectory=None,
    resume=False,
    logfile=None,
    verbose=0,
):
    """Optimize a structure with ASE's BFGS, in parts, with Hessian resets and checkpoints.

    The moving atoms are every atom named by a part of ``schedule`` and not held by
    the structure's own ``FixAtoms``. Parts take turns in rounds: a round of part P
    holds every other atom with ``FixAtoms`` (added to the structure's own
    constraints) and lasts the part's number of steps, or less if P converges or
    its uncertainty rises above ``max_uncertainty``; then the next part in the
    schedule whose atoms still need moving takes over, cyclically. One BFGS object
    (one Hessian approximation over all atoms) serves every round. The run stops
    when the largest force on all moving atoms is below ``fmax`` (convergence is
    judged on the whole structure, never on one part), after ``steps`` steps, or
    when every part that is not converged has been stopped by ``max_uncertainty``.

    Parameters
    ----------
    atoms : ase.Atoms
        Start structure (positions in Å). Not modified: a copy is optimized and
        returned in the result. (ASE's optimizers move their atoms in place; a
        schedule adds and removes constraints, and a resumed run must start from
        the same structure as the interrupted one, so here the input stays the
        start structure.)
    calculator : ase.calculators.calculator.Calculator, default=None
        Gives forces (eV/Å); an energy (eV) and a per-atom
        ``results["uncertainty"]`` (Å) are recorded when it has them. None uses
        ``atoms.calc``.
    fmax : float, default=0.05
        Convergence threshold on the largest force norm of the moving atoms, eV/Å.
    steps : int, default=200
        Most BFGS steps in all (paper IV: 200).
    maxstep : float, default=0.1
        Longest step of any atom, Å (ASE's BFGS scales the whole step down to it;
        paper IV: 0.1 Å for rings, 0.05 Å for Au38 snapshots; ASE's default 0.2).
    alpha : float, default=70.0
        Initial Hessian approximation ``alpha`` times the identity, eV/Å² (ASE's
        BFGS default); a reset returns to it.
    schedule : list of tuple, default=None
        The parts and their steps per round, in turn: ``(part, n_steps)`` or
        ``(label, indices, n_steps)``. ``part`` is ``"shell"`` (unit and half-unit
        gold, S, C, H — :data:`SHELL_TYPES`), ``"core"`` (core gold —
        :data:`CORE_TYPES`), ``"all"``, or atom indices (ints, or a boolean mask
        over the atoms; labelled ``"part<i>"`` after its schedule position). Named
        parts are typed once, by :func:`mlmlearn.atoms.gold_thiolate_types` on the
        start structure, and keep their atoms for the whole run: a bond stretched
        during the run does not move an atom between parts, and a resumed run has
        the same parts. None is one part, ``"all"``, without a step limit per round.
        Paper IV's part-wise scheme: ``[("shell", 24), ("core", 12)]``.
    hessian_reset : int or "round", default=None
        Reset the Hessian approximation to ``alpha`` times the identity every this
        many steps (after frames n, 2n, …; paper IV: 36, one shell and one core
        round), or ``"round"`` at the start of every round after the first. None
        never resets. Without a reset, the one update whose two points belong to
        different parts is skipped when a round changes the moving atoms: its
        forces are zero on different atoms at its two ends (the ``FixAtoms`` of two
        rounds), which is no secant information and can make the approximation
        indefinite.
    max_uncertainty : float, default=None
        Stop a part when the largest per-atom ``results["uncertainty"]`` of the
        calculator (Å) over the part's moving atoms exceeds this; the other parts
        go on while theirs is below it, and the run stops (``"uncertainty"``) when
        no part that needs moving may move. The structure is kept where the
        threshold was crossed. Stopping, rather than shrinking ``maxstep``, hands
        the decision to what runs next (a reference calculation) instead of walking
        on, more slowly, where the model is known to be unreliable, and keeps the
        BFGS trust region what the user set.
    trajectory : str or path-like, default=None
        Extended-XYZ file (``.extxyz`` or ``.xyz``) to write every frame to:
        positions, the calculator's forces and energy (when it has one), per-atom
        ``uncertainty`` (when present), and ``info`` keys ``step``, ``part``,
        ``round``, ``hessian_reset`` (bool, reset at this frame) and ``fmax``.
        A checkpoint ``trajectory + ".checkpoint.npz"`` is written next to it after
        every frame (atomically: a temporary file moved into place). Overwritten
        unless ``resume``.
    resume : bool, default=False
        Continue the run whose checkpoint is next to ``trajectory``, from its last
        frame; frames written after the checkpoint (an interrupted write) are cut
        off. The resumed run ends exactly where the uninterrupted run ends when the
        calculator's results depend on the structure alone (as with mlmlearn's
        force field, EMT, Lennard-Jones; an SCF code restarting from its previous
        wavefunction agrees to its SCF tolerance). Every setting but ``steps``,
        ``logfile`` and ``verbose`` must equal the interrupted call's; a larger
        ``steps`` continues a run that stopped at its step limit. Without a
        checkpoint (and with no frames in ``trajectory``) the run starts afresh.
    logfile : file-like, str or path-like, default=None
        ASE's optimizer log (``"-"`` for standard output); the energy column
        reads ``nan`` for a calculator without energy.
    verbose : int, default=0
        Show a progress bar of the steps.

    Returns
    -------
    result : OptimizationResult

    Raises
    ------
    ValueError
        For a bad argument: the message names it and its value (an unknown part
        name, a part with no atoms left to move, an index out of range, a step
        count that is not a positive integer, ``max_uncertainty`` with a calculator
        that gives no uncertainty, ``resume`` without ``trajectory``).
    ResumeError
        When resuming: the structure (atom count, elements, cell, start
        positions), a setting or the trajectory differs from the checkpoint's.
    mlmlearn.atoms.AtomTypingError
        A named part on a structure that gold-thiolate typing does not cover.

    See Also
    --------
    mlmlearn.forcefield.ForcesOnly : ASE's optimizers on a forces-only calculator.
    mlmlearn.plotting.plot_energy_trace : energies along runs, ``hessian_resets`` as crosses.

    Notes
    -----
    A resumed run reads the BFGS state (Hessian approximation, last positions and
    forces) and the positions in binary from the checkpoint: the trajectory's text
    keeps eight decimals, not enough to continue bit for bit. The reset is ASE's
    ``BFGS.initialize()``, not ``opt.H = None``: ASE's update modifies the initial
    matrix in place after the first step, so ``H = None`` returns to the current
    approximation, not to ``alpha`` times the identity.

    Examples
    --------
    An Au13 icosahedron relaxed with EMT, its surface and centre in turns:

    >>> from ase.calculators.emt import EMT
    >>> from ase.cluster import Icosahedron
    >>> atoms = Icosahedron("Au", 2)
    >>> atoms.rattle(0.05, seed=0)
    >>> result = optimize(atoms, EMT(), schedule=[(range(1, 13), 8), ("centre", [0], 2)],
    ...                   fmax=0.05, maxstep=0.1)
    >>> result.converged, result.stop_reason
    (True, 'converged')
    >>> result.parts[:4].tolist(), int(result.rounds[-1]) > 1
    (['start', 'part0', 'part0', 'part0'], True)
    >>> bool(result.fmax[-1] < 0.05 <= result.fmax[0])
    True
    """
    from .._optional import import_optional

    ase = import_optional("ase", purpose="optimize")
    run = _Run(
        atoms,
        calculator,
        fmax=fmax,
        steps=steps,
        maxstep=maxstep,
        alpha=alpha,
        schedule=schedule,
        hessian_reset=hessian_reset,
        max_uncertainty=max_uncertainty,
        trajectory=trajectory,
        resume=resume,
        ase=ase,
    )
    return run.run(logfile=logfile, verbose=verbose)


@dataclasses.dataclass(frozen=True)
class _Part:
    label: str
    indices: tuple  # sorted atom indices named by the part
    moving: np.ndarray  # those not held by the structure's own FixAtoms
    n_steps: int  # steps per round; None for no limit


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return int(value)


def _positive_float(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name}={value!r} must be a positive, finite number")
    return float(value)


def _user_fixed(atoms):
    """Indices held by the structure's own ``FixAtoms`` constraints."""
    from ase.constraints import FixAtoms

    fixed = [c.get_indices() for c in atoms.constraints if isinstance(c, FixAtoms)]
    return np.unique(np.concatenate(fixed)).astype(int) if fixed else np.zeros(0, int)


def _parse_schedule(schedule, atoms):
    """The parts of ``schedule`` as :class:`_Part`, checked against ``atoms``."""
    n_atoms = len(atoms)
    fixed = _user_fixed(atoms)
    entries = [("all", None)] if schedule is None else schedule
    if isinstance(entries, (str, bytes)) or not hasattr(entries, "__len__") or not entries:
        raise ValueError(
            f"schedule={schedule!r} must be None or a non-empty list of (part, n_steps) "
            "or (label, indices, n_steps)"
        )
    types = None
    parts = []
    for i, entry in enumerate(entries):
        where = f"schedule[{i}]={entry!r}"
        if not isinstance(entry, (tuple, list)) or len(entry) not in (2, 3):
            raise ValueError(f"{where} must be (part, n_steps) or (label, indices, n_steps)")
        if len(entry) == 3:
            label, spec, n_steps = entry
            if not isinstance(label, str) or not label:
                raise ValueError(f"{where}: the label {label!r} must be a non-empty string")
        else:
            spec, n_steps = entry
            label = spec if isinstance(spec, str) else f"part{i}"
        if schedule is not None:
            n_steps = _positive_int(n_steps, f"the step count of {where}")
        if isinstance(spec, str):
            if spec not in _NAMED_PARTS:
                raise ValueError(
                    f"{where}: unknown part {spec!r}; named parts are {sorted(_NAMED_PARTS)}, "
                    "or give atom indices"
                )
            if spec == "all":
                indices = np.arange(n_atoms)
            else:
                if types is None:
                    from ..atoms import gold_thiolate_types

                    types = gold_thiolate_types(atoms)
                indices = np.flatnonzero(np.isin(types, _NAMED_PARTS[spec]))
        else:
            indices = _indices(spec, n_atoms, where)
        moving = np.setdiff1d(indices, fixed)
        if moving.size == 0:
            if indices.size:
                what = f"only atoms held by its own FixAtoms ({indices.tolist()}) in it"
            elif isinstance(spec, str):
                what = f"no atom of the types {list(_NAMED_PARTS[spec])}"
            else:
                what = "no atom in it"
            raise ValueError(f"{where}: part {label!r} is empty: the structure has {what}")
        parts.append(_Part(label, tuple(indices.tolist()), moving, n_steps))
    return parts


def _indices(spec, n_atoms, where):
    try:
        array = np.asarray(list(spec) if isinstance(spec, range) else spec)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: a part must be a name or atom indices") from exc
    if array.dtype == bool:
        if array.shape != (n_atoms,):
            raise ValueError(
                f"{where}: a boolean mask must have one entry per atom ({n_atoms}), "
                f"not shape {array.shape}"
            )
        return np.flatnonzero(array)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{where}: atom indices must be a 1-D sequence of integers")
    bad = array[(array < 0) | (array >= n_atoms)]
    if bad.size:
        raise ValueError(
            f"{where}: atom index {int(bad[0])} is out of range for {n_atoms} atoms"
        )
    return np.unique(array.astype(int))


class _Run:
    """One optimization: the driver around ASE's BFGS, its records and its checkpoint.

    After each frame :meth:`_frame` computes the forces, decides what happens next
    (round continues or the next part takes over, Hessian reset, stop), records the
    frame and writes the checkpoint with the state *after* these decisions; the loop
    then takes one BFGS step. A resumed run restores that state and goes on with the
    step, so it makes the same decisions at the same frames. Between rounds,
    :meth:`_start_round` is where a later optimizer (reference steps, refitting)
    can act.
    """

    def __init__(self, atoms, calculator, *, fmax, steps, maxstep, alpha, schedule,
                 hessian_reset, max_uncertainty, trajectory, resume, ase):
        if not isinstance(atoms, ase.Atoms):
            raise TypeError(f"atoms must be an ase.Atoms, not {type(atoms).__name__}")
        if len(atoms) == 0:
            raise ValueError("atoms has no atoms to optimize")
        calculator = atoms.calc if calculator is None else calculator
        if calculator is None:
            raise ValueError("calculator=None and atoms has no calculator attached")
        self.fmax = _positive_float(fmax, "fmax")
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ValueError(f"steps={steps!r} must be a non-negative integer")
        self.steps = int(steps)
        self.maxstep = _positive_float(maxstep, "maxstep")
        self.alpha = _positive_float(alpha, "alpha")
        if hessian_reset is not None and hessian_reset != "round":
            hessian_reset = _positive_int(hessian_reset, "hessian_reset")
        self.hessian_reset = hessian_reset
        if max_uncertainty is not None:
            max_uncertainty = _positive_float(max_uncertainty, "max_uncertainty")
        self.max_uncertainty = max_uncertainty
        if resume and trajectory is None:
            raise ValueError("resume=True needs the trajectory= of the run to continue")
        if trajectory is not None:
            trajectory = os.fspath(trajectory)
            if not trajectory.lower().endswith(_TRAJECTORY_SUFFIXES):
                raise ValueError(
                    f"trajectory={trajectory!r}: optimize writes extended XYZ; "
                    f"name the file {' or '.join(_TRAJECTORY_SUFFIXES)}"
                )
        self.trajectory = trajectory
        self.checkpoint = None if trajectory is None else trajectory + ".checkpoint.npz"
        self.resume = bool(resume)
        self.ase = ase

        self.start = atoms
        self.work = atoms.copy()  # copies the constraints, not the calculator
        self.work.calc = calculator
        self.user_constraints = list(self.work.constraints)
        self.parts = _parse_schedule(schedule, self.work)
        self.moving = np.unique(np.concatenate([p.moving for p in self.parts]))

        # state after the decisions at the last frame
        self.k = -1  # last frame
        self.round = 0
        self.position = -1  # schedule index of the current part
        self.round_step = 0
        self.stop_reason = None
        self.traj_bytes = 0
        self.history = {"fmax": [], "energy": [], "uncertainty": [], "part": [], "round": []}
        self.resets = []
        self.uncertainty_stops = []

    # -- settings that fix the path of a run (all but steps) --------------------------
    def _settings(self):
        return {
            "fmax": self.fmax,
            "maxstep": self.maxstep,
            "alpha": self.alpha,
            "hessian_reset": self.hessian_reset,
            "max_uncertainty": self.max_uncertainty,
            "schedule": [[p.label, list(p.indices), p.n_steps] for p in self.parts],
        }

    def run(self, *, logfile, verbose):
        from ase.optimize import BFGS

        from ..forcefield._forces_only import ForcesOnly

        restored = self._restore() if self.resume else None
        if restored is None and self.checkpoint is not None and os.path.exists(self.checkpoint):
            os.remove(self.checkpoint)  # a stale checkpoint must not pair with new frames
        fd = None
        if self.trajectory is not None:
            fd = open(self.trajectory, "r+b" if restored else "wb")
            fd.truncate(self.traj_bytes)
            fd.seek(self.traj_bytes)
            if restored is None:
                self._write_checkpoint(None)  # "nothing done yet", paired with the empty file
        bar = progress_bar(self.steps, verbose=verbose, desc="optimize", unit="step")
        try:
            with BFGS(
                ForcesOnly(self.work), logfile=logfile, maxstep=self.maxstep, alpha=self.alpha
            ) as opt:
                opt.fmax = self.fmax
                if restored is None:
                    self.k = 0
                    self._frame(opt, fd)
                else:
                    self._set_state(opt, restored)
                    if self.stop_reason == "steps" and self.k < self.steps:
                        self.stop_reason = None  # a larger step limit continues the run
                    elif self.stop_reason is None and self.k >= self.steps:
                        self.stop_reason = "steps"  # a smaller one ends it where it is
                bar.update(max(self.k, 0))
                while self.stop_reason is None:
                    self._constrain(self.parts[self.position])
                    opt.step()
                    self.k += 1
                    self.round_step += 1
                    opt.nsteps = self.k
                    self._frame(opt, fd)
                    bar.update(1)
                    bar.set_postfix_str(
                        f"{self.parts[self.position].label} fmax={self.history['fmax'][-1]:.3g}"
                    )
        finally:
            bar.close()
            if fd is not None:
                fd.close()
            self.work.set_constraint(self.user_constraints)
        return self._result()

    # -- one frame ---------------------------------------------------------------------
    def _frame(self, opt, fd):
        """Forces at frame ``self.k``; decisions; record; checkpoint."""
        from ase.calculators.calculator import PropertyNotImplementedError

        work, k = self.work, self.k
        raw = work.get_forces(apply_constraint=False)
        forces = raw.copy()
        for constraint in self.user_constraints:
            constraint.adjust_forces(work, forces)
        norms = np.linalg.norm(forces, axis=1)
        try:
            energy = float(work.get_potential_energy())
        except PropertyNotImplementedError:
            energy = math.nan
        uncertainty = self._uncertainty()
        fmax_all = float(norms[self.moving].max())
        made_by = ("start", 0) if k == 0 else (self.parts[self.position].label, self.round)

        reset = False
        if fmax_all < self.fmax:
            self.stop_reason = "converged"
        else:
            reset = self._decide_round(norms, uncertainty, opt)
            if (
                isinstance(self.hessian_reset, int)
                and k > 0
                and k % self.hessian_reset == 0
                and self.stop_reason is None
            ):
                reset = True
            if reset:
                opt.initialize()
                self.resets.append(k)
            if self.stop_reason is None and k >= self.steps:
                self.stop_reason = "steps"

        moving_unc = math.nan if uncertainty is None else float(uncertainty[self.moving].max())
        for key, value in zip(
            ("fmax", "energy", "uncertainty", "part", "round"),
            (fmax_all, energy, moving_unc, *made_by),
            strict=True,
        ):
            self.history[key].append(value)
        moving_forces = np.zeros_like(forces)
        moving_forces[self.moving] = forces[self.moving]
        opt.log(moving_forces.ravel())  # ASE's log line; its fmax is the convergence measure
        if fd is not None:
            self._write_frame(fd, raw, energy, uncertainty, made_by, reset, fmax_all)
            self._write_checkpoint(opt)

    def _uncertainty(self):
        results = getattr(self.work.calc, "results", {})
        if "uncertainty" not in results:
            if self.max_uncertainty is not None:
                raise ValueError(
                    f"max_uncertainty={self.max_uncertainty!r} needs a per-atom 'uncertainty' in "
                    f"the calculator's results; {type(self.work.calc).__name__} gives "
                    f"{sorted(results)}"
                )
            return None
        uncertainty = np.asarray(results["uncertainty"], dtype=float)
        if uncertainty.shape != (len(self.work),):
            raise ValueError(
                f"the calculator's results['uncertainty'] has shape {uncertainty.shape}; "
                f"expected one value per atom, ({len(self.work)},)"
            )
        return uncertainty

    def _eligible(self, part, norms, uncertainty):
        """Whether ``part`` needs moving and may move: (needs, blocked by uncertainty)."""
        needs = bool(norms[part.moving].max() >= self.fmax)
        blocked = (
            self.max_uncertainty is not None
            and float(uncertainty[part.moving].max()) > self.max_uncertainty
        )
        return needs, blocked

    def _decide_round(self, norms, uncertainty, opt):
        """Continue the round or start the next one; returns whether to reset the Hessian."""
        parts = self.parts
        if self.position >= 0:
            current = parts[self.position]
            needs, blocked = self._eligible(current, norms, uncertainty)
            limit = current.n_steps is None or self.round_step < current.n_steps
            if needs and not blocked and limit:
                return False
            if needs and blocked:
                self.uncertainty_stops.append((self.k, current.label))
        order = (
            range(len(parts))
            if self.position < 0
            else [(self.position + j) % len(parts) for j in range(1, len(parts) + 1)]
        )
        for j in order:
            needs, blocked = self._eligible(parts[j], norms, uncertainty)
            if needs and not blocked:
                return self._start_round(j, opt)
        self.stop_reason = "uncertainty"
        return False

    def _start_round(self, j, opt):
        """Make part ``j`` the moving one; returns whether to reset the Hessian."""
        previous = None if self.position < 0 else self.parts[self.position]
        self.position, self.round, self.round_step = j, self.round + 1, 0
        if self.hessian_reset == "round" and self.round > 1:
            return True
        changed = previous is not None and not np.array_equal(previous.moving, self.parts[j].moving)
        if changed and opt.H is not None:
            # skip the update across the switch: BFGS.update returns on an unchanged position
            opt.pos0 = self.work.get_positions().ravel()
        return False

    def _constrain(self, part):
        from ase.constraints import FixAtoms

        held = np.setdiff1d(np.arange(len(self.work)), part.moving)
        extra = [FixAtoms(indices=held)] if held.size else []
        self.work.set_constraint(self.user_constraints + extra)

    # -- trajectory and checkpoint ---------------------------------------------------
    def _write_frame(self, fd, raw, energy, uncertainty, made_by, reset, fmax_all):
        import io

        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.io import write

        frame = self.work.copy()
        frame.set_constraint()
        results = {"forces": raw}
        if math.isfinite(energy):
            results["energy"] = energy
        frame.calc = SinglePointCalculator(frame, **results)
        if uncertainty is not None:
            frame.arrays["uncertainty"] = uncertainty.copy()
        frame.info.update(
            step=self.k,
            part=made_by[0],
            round=made_by[1],
            hessian_reset=bool(reset),
            fmax=fmax_all,
        )
        if uncertainty is not None:
            frame.info["max_uncertainty"] = self.history["uncertainty"][-1]
        text = io.StringIO()
        write(text, frame, format="extxyz")
        fd.write(text.getvalue().encode())
        fd.flush()
        os.fsync(fd.fileno())
        self.traj_bytes = fd.tell()

    def _write_checkpoint(self, opt):
        state = {
            "k": self.k,
            "round": self.round,
            "position": self.position,
            "round_step": self.round_step,
            "stop_reason": self.stop_reason,
            "traj_bytes": self.traj_bytes,
            "resets": self.resets,
            "uncertainty_stops": self.uncertainty_stops,
            "parts": self.history["part"],
            "rounds": self.history["round"],
        }
        arrays = {
            "format": np.array(_CHECKPOINT_FORMAT),
            "settings": np.array(json.dumps(self._settings())),
            "state": np.array(json.dumps(state)),
            "numbers": self.start.numbers,
            "cell": self.start.cell.array,
            "pbc": self.start.pbc,
            "start_positions": self.start.positions,
            "positions": self.work.positions,
            "fmax": np.array(self.history["fmax"], float),
            "energy": np.array(self.history["energy"], float),
            "uncertainty": np.array(self.history["uncertainty"], float),
        }
        if opt is not None:
            for name in ("H", "pos0", "forces0"):
                value = getattr(opt, name)
                if value is not None:
                    arrays["bfgs_" + name] = np.asarray(value)
        save_checkpoint(self.checkpoint, arrays)

    def _restore(self):
        """The checkpoint's arrays, checked against this call; None to start afresh."""
        saved = load_checkpoint(self.checkpoint, self.trajectory, _CHECKPOINT_FORMAT)
        if saved is None:
            return None
        start = self.start
        check_start(saved, start, start.positions, self.checkpoint)
        if np.any(saved["pbc"] != start.pbc) or not np.allclose(
            saved["cell"], start.cell.array, rtol=0, atol=START_TOLERANCE
        ):
            raise ResumeError(
                f"atoms has cell {start.cell.array.tolist()} and pbc {start.pbc.tolist()}; the "
                f"checkpoint {self.checkpoint!r} has {saved['cell'].tolist()} and "
                f"{saved['pbc'].tolist()}"
            )
        check_settings(saved, self._settings(), self.checkpoint)
        state = json.loads(str(saved["state"]))
        if state["k"] < 0:
            return None  # interrupted before the first frame was recorded
        check_trajectory(self.trajectory, state["traj_bytes"])
        self.k, self.round = state["k"], state["round"]
        self.position, self.round_step = state["position"], state["round_step"]
        self.stop_reason, self.traj_bytes = state["stop_reason"], state["traj_bytes"]
        self.resets = state["resets"]
        self.uncertainty_stops = [tuple(s) for s in state["uncertainty_stops"]]
        self.history = {
            "fmax": saved["fmax"].tolist(),
            "energy": saved["energy"].tolist(),
            "uncertainty": saved["uncertainty"].tolist(),
            "part": state["parts"],
            "round": state["rounds"],
        }
        return saved

    def _set_state(self, opt, saved):
        self.work.set_positions(saved["positions"], apply_constraint=False)
        opt.nsteps = self.k
        opt.initialize()
        for name in ("H", "pos0", "forces0"):
            key = "bfgs_" + name
            setattr(opt, name, saved[key].copy() if key in saved else None)

    def _result(self):
        work = self.work
        return OptimizationResult(
            atoms=work,
            converged=self.stop_reason == "converged",
            stop_reason=self.stop_reason,
            n_steps=self.k,
            fmax=np.array(self.history["fmax"], float),
            energies=np.array(self.history["energy"], float),
            max_uncertainty=np.array(self.history["uncertainty"], float),
            parts=np.array(self.history["part"], dtype=str),
            rounds=np.array(self.history["round"], dtype=int),
            hessian_resets=np.array(self.resets, dtype=int),
            uncertainty_stops=list(self.uncertainty_stops),
            trajectory=self.trajectory,
            checkpoint=self.checkpoint,
        )
