"""Hybrid optimization: ML-BFGS rounds checked, taught and finished by a reference method.

Paper IV (section III D) closes its Au38 optimizations with "a straightforward way to
improve the optimization would be to add DFT-level optimization steps between the ML
optimization rounds", and its conclusion proposes coarse optimization with ML and fine
tuning with DFT. :func:`hybrid_optimize` does that, learning on the fly: every reference
single point (GFN2-xTB, say) joins the force field's training data through
:meth:`~mlmlearn.forcefield.ForceField.partial_fit` before the force field is used
again, and convergence is judged on the reference forces only.
"""

import copy
import dataclasses
import functools
import math
import numbers
import os
import sys

import numpy as np

__all__ = ["HybridResult", "hybrid_optimize"]

#: The force field's domain: errors that mean the structure left what it describes.
_DOMAIN_ERRORS = ("UnknownAtomTypeError", "MissingNeighborsError", "AtomTypingError")
#: Finite-difference step of the force field's Hessian, Å.
_HESSIAN_STEP = 0.005
#: Halvings of a reference step whose calculation failed before giving up.
_RETRIES = 5


@dataclasses.dataclass(eq=False)
class HybridResult:
    """What :func:`hybrid_optimize` did, reference call by reference call.

    Attributes
    ----------
    atoms : ase.Atoms
        The final structure (Å): the reference structure that converged, or else the
        last one the optimization stood on; a copy of the input with a
        ``SinglePointCalculator`` holding its reference energy (eV) and forces (eV/Å).
    converged : bool
        Whether the reference fmax of ``atoms`` is below ``fmax``.
    stop_reason : {"converged", "reference_calls"}
        Converged, or ``max_reference_calls`` were spent.
    n_reference_calls : int
        Reference calculations made, failed ones included: every call of the
        reference calculator's ``calculate``.
    reference_energies : ndarray of shape (n_reference_calls,)
        Reference energy (eV) of each call, in order; NaN for a failed one.
    reference_fmax : ndarray of shape (n_reference_calls,)
        Largest reference force norm (eV/Å, after the structure's own constraints);
        NaN for a failed call.
    kinds : ndarray of str of shape (n_reference_calls,)
        Why each call was made: ``"start"``; ``"ml"`` after an ML round that ended on
        its step limit or on ``ml_fmax``; ``"uncertainty"`` after a round that
        ``max_uncertainty`` stopped; ``"domain"`` after a round that left what the
        force field describes (the check is at the round's last structure it could
        predict); ``"reference"`` after a reference BFGS step.
    accepted : ndarray of bool of shape (n_reference_calls,)
        Whether the optimization moved to the call's structure. An ML round is
        accepted when the reference energy did not rise; a reference BFGS step
        always (as in plain BFGS), unless its calculation failed.
    ml_steps : ndarray of int of shape (n_reference_calls,)
        ML-BFGS steps taken before each call (0 for the start and reference steps).
    n_ml_steps : int
        All ML-BFGS steps.
    hessian_calls : list of int
        The calls at whose structure the reference BFGS took the force field's
        Hessian as its initial approximation (empty when it started from ASE's
        ``alpha`` times the identity).
    n_refits : int
        Reference results added to the force field by ``partial_fit``.
    refit_skipped : list of (int, str)
        ``(call, reason)`` for atoms of a reference result that could not join the
        training data (a type without a model, missing alignment partners).
    force_field : ForceField
        The force field after the last refit: a copy of the input with
        ``refit=True``, the input itself (unchanged) otherwise.
    trajectory : str or None
        The extended-XYZ file of the reference frames.
    """

    atoms: object = dataclasses.field(repr=False)
    converged: bool
    stop_reason: str
    n_reference_calls: int
    reference_energies: np.ndarray = dataclasses.field(repr=False)
    reference_fmax: np.ndarray = dataclasses.field(repr=False)
    kinds: np.ndarray = dataclasses.field(repr=False)
    accepted: np.ndarray = dataclasses.field(repr=False)
    ml_steps: np.ndarray = dataclasses.field(repr=False)
    n_ml_steps: int
    hessian_calls: list = dataclasses.field(repr=False)
    n_refits: int
    refit_skipped: list = dataclasses.field(repr=False)
    force_field: object = dataclasses.field(repr=False)
    trajectory: str = None


def hybrid_optimize(
    atoms,
    force_field,
    reference_calculator,
    *,
    fmax=0.05,
    ml_fmax=0.1,
    ml_steps=15,
    maxstep=0.1,
    max_uncertainty="auto",
    refit=True,
    refit_weight=1.0,
    precondition=True,
    hessian_floor=5.0,
    reference_maxstep=0.2,
    max_reference_calls=200,
    trajectory=None,
    verbose=0,
):
    """Optimize a structure with ML rounds and reference steps, converged on reference forces.

    1. **Start.** A reference single point at ``atoms`` (call 0), added to the
       force field's training data (``refit``).
    2. **ML rounds** (the coarse part). ML-BFGS
       (:func:`~mlmlearn.applications.optimize.optimize` on the force field's
       :class:`~mlmlearn.forcefield.MLMCalculator`: ``maxstep``, at most
       ``ml_steps`` steps, ``ml_fmax`` on ML forces, stopped where the predicted
       uncertainty rises above ``max_uncertainty``), then a reference single point
       at its end, learned before the next round. A round is accepted when the
       reference energy did not rise. The ML rounds end with the first round that is
       rejected, that cannot move (the ML forces are already below ``ml_fmax``, or the
       uncertainty is too high at its start), or that cannot begin (the structure is
       outside the force field's domain: an atom type without a model, missing
       alignment partners); the optimization then returns to the structure it stood on.
    3. **Reference BFGS** (the fine part): ASE's ``BFGS`` on the reference forces,
       ``reference_maxstep``, one reference call per step, with the force field's
       Hessian (central differences of the refitted force field's forces, eigenvalues
       raised to ``hessian_floor``) as its initial approximation instead of ASE's
       70 eV/Å² times the identity (``precondition``).

    The optimization stops at the first reference call whose fmax is below ``fmax``
    — never on ML forces — or after ``max_reference_calls``. Every reference result
    joins the training data, of the ML rounds and of the Hessian alike.

    Parameters
    ----------
    atoms : ase.Atoms
        Start structure (Å). Not modified; its own constraints are respected.
    force_field : ForceField
        A fitted :class:`~mlmlearn.forcefield.ForceField`. Never modified: with
        ``refit`` a deep copy learns (returned as ``result.force_field``).
    reference_calculator : ase.calculators.calculator.Calculator
        Gives energies (eV) and forces (eV/Å), e.g. ``tblite.ase.TBLite``. Called
        through its ``calculate`` method, each call counted. For small structures run
        tblite on one thread (``threadpoolctl.threadpool_limits(1)``).
    fmax : float, default=0.05
        Convergence threshold on the largest reference force norm, eV/Å.
    ml_fmax : float, default=0.1
        An ML round ends when the ML forces fall below this, eV/Å (paper IV's ML
        threshold for rings).
    ml_steps : int, default=15
        Most ML-BFGS steps of a round; 0 skips the ML rounds. From the 600 K ring
        frames ML-BFGS reaches its lowest GFN2-xTB energy within 10–20 steps and
        rises after.
    maxstep : float, default=0.1
        Longest ML-BFGS step of any atom, Å (paper IV, rings).
    max_uncertainty : float, "auto" or None, default="auto"
        Stop an ML round where the largest per-atom uncertainty of the force field
        (Å, see :meth:`ForceField.predict`) exceeds this. ``"auto"``: 1.5 times its
        value at the round's start — the round stops where the model is markedly
        less sure than where it began. None never stops on it.
    refit : bool, default=True
        Add every reference result to (a copy of) the force field by
        ``partial_fit``, atom type by type (atoms of a type without a model are left
        out, recorded in ``refit_skipped``).
    refit_weight : float, default=1.0
        Sample weight of a reference result's environments in the refit (the
        training environments weigh 1). Measured on the Au5 ring held out, with its
        600 K start frame learned: 15 ML steps end 0.73, 0.96 and 1.87 eV above the
        GFN2-xTB minimum with weights 1, 10 and 100 (0.69 without the refit), 40 steps
        1.1, 3.6 and 6.5 eV — one heavily weighted hot frame bends the model around it.
    precondition : bool, default=True
        Start the reference BFGS from the force field's Hessian at its first point
        (when the force field can describe the displaced structures; otherwise, and
        with False, from ASE's ``alpha`` times the identity).
    hessian_floor : float, default=5.0
        Smallest eigenvalue of that Hessian, eV/Å². The force field's forces are not
        a gradient: its Hessian has negative and spurious near-zero eigenvalues, and
        the net force and torque removal makes the rigid-body modes zero; raising
        them keeps the BFGS steps bounded. 1 eV/Å² gave 59 reference calls on the Au5
        ring from its 600 K frame, 5 and 20 eV/Å² both 42 (plain BFGS: 71).
    reference_maxstep : float, default=0.2
        Longest reference BFGS step, Å (ASE's default, as in the plain BFGS compared).
    max_reference_calls : int, default=200
        Budget of reference calls.
    trajectory : str or path-like, default=None
        Extended-XYZ file for every reference frame, in call order: positions, the
        reference energy and forces, ``info`` keys ``call``, ``kind``, ``accepted``,
        ``ml_steps``, ``fmax`` (a failed call: positions and ``failed=True``).
    verbose : int, default=0
        One line per reference call on standard error.

    Returns
    -------
    result : HybridResult

    Raises
    ------
    ValueError
        For a bad argument (the message names it and its value), or a reference
        calculator without energies.
    ase.calculators.calculator.CalculationFailed
        When the reference calculation of the start fails, or a reference step fails
        after its length was halved five times. A failed calculation after an ML
        round is counted and rejects the round.

    See Also
    --------
    mlmlearn.applications.optimize.optimize : the ML-BFGS of the rounds.
    mlmlearn.forcefield.ForceField.partial_fit : the refit.

    Notes
    -----
    The force field shapes where the reference BFGS goes twice: its rounds move the
    structure downhill where its forces are good (far from the minimum), and its
    Hessian replaces the identity BFGS starts from, so that stiff bonds and soft
    torsions get steps of their own size from the first step. Near the minimum its
    forces are not good enough to continue. Along a plain GFN2-xTB BFGS run of the
    held-out Au5 ring from its 600 K frame, the RMS error of the force field's forces
    at the next step is ~0.6 eV/Å, and ~0.1 eV/Å when every previous step has been
    learned (weight 10) — while the RMS force there is 0.03–0.15 eV/Å; an ML round
    near the minimum is rejected more often than not. Three things were measured on
    the held-out rings (Au4, Au5 built and from 600 K, Au6 built) and left out: ML
    rounds tried again after a rejection, with the interval doubling (every rejected
    round costs a reference call: 1.6–2.5 times the calls), ML forces shifted to agree
    with the last reference forces (the first round from the Au5 600 K frame climbed
    5.1 eV instead of falling 2.5 eV), and the force field's Hessian recomputed every 5
    reference steps (BFGS restarted without its secant information: the Au4 ring had
    not converged after 150 calls, plain BFGS takes 35).
    """
    from .._optional import import_optional

    ase = import_optional("ase", purpose="hybrid_optimize")
    run = _Hybrid(atoms, force_field, reference_calculator, fmax=fmax, ml_fmax=ml_fmax,
                  ml_steps=ml_steps, maxstep=maxstep, max_uncertainty=max_uncertainty,
                  refit=refit, refit_weight=refit_weight, precondition=precondition,
                  hessian_floor=hessian_floor, reference_maxstep=reference_maxstep,
                  max_reference_calls=max_reference_calls, trajectory=trajectory,
                  verbose=verbose, ase=ase)
    return run.run()


def _positive(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} must be a positive, finite number")
    return float(value)


def _count(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}")
    return int(value)


def _domain_errors():
    from ..atoms import AtomTypingError, MissingNeighborsError
    from ..forcefield import UnknownAtomTypeError

    return UnknownAtomTypeError, MissingNeighborsError, AtomTypingError


@functools.cache
def _recording_calculator_class():
    """:class:`~mlmlearn.forcefield.MLMCalculator` that remembers the last structure it
    predicted, so that a round stopped by a domain error ends where the model still held."""
    from ..forcefield import MLMCalculator

    class RecordingMLMCalculator(MLMCalculator):
        last_positions = None
        n_predicted = 0

        def calculate(self, *args, **kwargs):
            super().calculate(*args, **kwargs)
            self.last_positions = self.atoms.positions.copy()
            self.n_predicted += 1

    return RecordingMLMCalculator


@dataclasses.dataclass
class _Point:
    """A reference result; a failed calculation has NaN energy and fmax, no forces."""

    positions: np.ndarray
    call: int
    energy: float = math.nan
    forces: np.ndarray = None
    fmax: float = math.nan

    @property
    def failed(self):
        return self.forces is None


class _Hybrid:
    """One hybrid optimization: reference calls, ML rounds, refits, the record."""

    def __init__(self, atoms, force_field, reference_calculator, *, fmax, ml_fmax, ml_steps,
                 maxstep, max_uncertainty, refit, refit_weight, precondition, hessian_floor,
                 reference_maxstep, max_reference_calls, trajectory, verbose, ase):
        from sklearn.utils.validation import check_is_fitted

        if not isinstance(atoms, ase.Atoms):
            raise TypeError(f"atoms must be an ase.Atoms, not {type(atoms).__name__}")
        if len(atoms) == 0:
            raise ValueError("atoms has no atoms to optimize")
        check_is_fitted(force_field, "norm_models_")
        if reference_calculator is None or not hasattr(reference_calculator, "calculate"):
            raise ValueError(
                f"reference_calculator={reference_calculator!r} must be an ASE calculator "
                "with energies and forces (e.g. tblite.ase.TBLite)")
        self.fmax = _positive(fmax, "fmax")
        self.ml_fmax = _positive(ml_fmax, "ml_fmax")
        self.ml_steps = _count(ml_steps, "ml_steps", 0)
        self.maxstep = _positive(maxstep, "maxstep")
        if max_uncertainty not in (None, "auto"):
            max_uncertainty = _positive(max_uncertainty, "max_uncertainty")
        self.max_uncertainty = max_uncertainty
        self.refit = bool(refit)
        self.refit_weight = _positive(refit_weight, "refit_weight")
        self.precondition = bool(precondition)
        self.hessian_floor = _positive(hessian_floor, "hessian_floor")
        self.reference_maxstep = _positive(reference_maxstep, "reference_maxstep")
        self.max_reference_calls = _count(max_reference_calls, "max_reference_calls", 1)
        if trajectory is not None:
            trajectory = os.fspath(trajectory)
            if not trajectory.lower().endswith((".extxyz", ".xyz")):
                raise ValueError(f"trajectory={trajectory!r}: hybrid_optimize writes extended "
                                 "XYZ; name the file .extxyz or .xyz")
        self.trajectory = trajectory
        self.verbose = verbose
        self.start = atoms.copy()
        self.start.calc = None
        self.reference = reference_calculator
        # the user's force field is never changed: refits go to a copy
        self.force_field = copy.deepcopy(force_field) if self.refit else force_field
        self.record = {k: [] for k in ("energy", "fmax", "kind", "accepted", "ml_steps")}
        self.n_ml_steps = 0
        self.n_refits = 0
        self.refit_skipped = []
        self.hessian_calls = []

    @property
    def n_calls(self):
        return len(self.record["energy"])

    def _atoms(self, positions):
        atoms = self.start.copy()
        atoms.set_positions(positions, apply_constraint=False)
        return atoms

    # -- reference calculations ------------------------------------------------------
    def _reference_call(self, positions, kind, ml_steps):
        """The reference energy and forces at ``positions``: one counted call of the
        reference calculator (a failed calculation gives a failed point)."""
        from ase.calculators.calculator import (
            CalculationFailed,
            PropertyNotImplementedError,
            all_changes,
        )

        atoms = self._atoms(positions)
        calc = self.reference
        # what changed since the calculator's last structure (positions only, mostly:
        # an SCF code then starts from its previous solution, as under ASE's BFGS)
        changes = all_changes if getattr(calc, "atoms", None) is None else (
            calc.check_state(atoms) or ["positions"])
        point = _Point(np.array(positions, dtype=float), self.n_calls)
        self.record["kind"].append(kind)
        self.record["ml_steps"].append(int(ml_steps))
        try:
            calc.calculate(atoms, ["energy", "forces"], changes)
            energy = float(calc.results["energy"])
            forces = np.array(calc.results["forces"], dtype=float)
        except CalculationFailed:
            if self.n_calls == 0:
                raise
            self.record["energy"].append(math.nan)
            self.record["fmax"].append(math.nan)
            return point
        except (PropertyNotImplementedError, KeyError) as exc:
            raise ValueError(
                f"reference_calculator {type(calc).__name__} gave no energy and forces "
                f"({sorted(getattr(calc, 'results', {}))}); hybrid_optimize compares "
                "reference energies to accept ML rounds") from exc
        constrained = forces.copy()
        for constraint in atoms.constraints:
            constraint.adjust_forces(atoms, constrained)
        fmax = float(np.linalg.norm(constrained, axis=1).max())
        self.record["energy"].append(energy)
        self.record["fmax"].append(fmax)
        point.energy, point.forces, point.fmax = energy, forces, fmax
        return point

    # -- learning ----------------------------------------------------------------------
    def _learn(self, point):
        """Add ``point``'s reference forces to the force field, type by type."""
        from ..atoms import AtomicEnvironments

        if not self.refit or point.failed:
            return
        call = point.call
        atoms = self._atoms(point.positions)
        atoms.set_constraint()
        env = AtomicEnvironments([atoms])
        ff = self.force_field
        try:
            labels = ff.atom_types(env)
        except _domain_errors() as exc:
            self.refit_skipped.append((call, str(exc)))
            return
        forces = point.forces[env.atom_index]
        learned = False
        for t in np.unique(labels):
            rows = np.flatnonzero(labels == t)
            if str(t) not in ff.types_:
                self.refit_skipped.append((call, f"atom type {t!r} has no model "
                                                 f"(atoms {env.atom_index[rows].tolist()})"))
                continue
            try:
                ff.partial_fit(env[rows], forces[rows],
                               sample_weight=np.full(len(rows), self.refit_weight))
                learned = True
            except _domain_errors() as exc:
                self.refit_skipped.append((call, f"{t}: {exc}"))
        self.n_refits += learned

    # -- ML rounds -----------------------------------------------------------------------
    def _ml_round(self, current):
        """ML-BFGS from ``current``: ``(positions, kind, n_steps)``, positions None when
        the round could not begin or did not move."""
        from .optimize import optimize

        calc = _recording_calculator_class()(self.force_field)
        atoms = self._atoms(current.positions)
        threshold = self.max_uncertainty
        try:
            if threshold == "auto":
                uncertainty = self.force_field.predict(atoms, return_uncertainty=True)[1]
                threshold = 1.5 * float(np.max(uncertainty))
            result = optimize(atoms, calc, fmax=self.ml_fmax, steps=self.ml_steps,
                              maxstep=self.maxstep, max_uncertainty=threshold)
        except _domain_errors():
            last = calc.last_positions
            if last is None or np.array_equal(last, current.positions):
                return None, "domain", 0
            # the steps up to the last structure predicted (the first call is the start)
            return last, "domain", calc.n_predicted - 1
        if result.n_steps == 0:
            return None, result.stop_reason, 0
        kind = "uncertainty" if result.stop_reason == "uncertainty" else "ml"
        return result.atoms.positions.copy(), kind, result.n_steps

    # -- reference BFGS ------------------------------------------------------------------
    def _ml_hessian(self, point):
        """The force field's Hessian at ``point`` (eV/Å²): central differences of its
        forces, symmetrised, eigenvalues raised to ``hessian_floor``; None when it
        cannot describe the displaced structures."""
        from ..atoms import AtomicEnvironments

        n = 3 * len(self.start)
        frames = []
        for i in range(n):
            for sign in (1.0, -1.0):
                x = point.positions.copy()
                x.flat[i] += sign * _HESSIAN_STEP
                atoms = self._atoms(x)
                atoms.set_constraint()
                frames.append(atoms)
        try:
            F = self.force_field.predict(AtomicEnvironments(frames)).reshape(n, 2, n)
        except _domain_errors():
            return None
        H = -(F[:, 0] - F[:, 1]).T / (2 * _HESSIAN_STEP)
        w, V = np.linalg.eigh(0.5 * (H + H.T))
        return (V * np.maximum(w, self.hessian_floor)) @ V.T

    def _reference_step(self, point, state, maxstep):
        """Positions after one ASE BFGS step on the reference forces at ``point``; the
        BFGS state (Hessian, last positions and forces) is read from and written to
        ``state``."""
        from ase.optimize import BFGS

        atoms = self._atoms(point.positions)
        opt = BFGS(atoms, logfile=None, maxstep=maxstep)
        if state.get("H0") is not None:
            opt.H0 = state["H0"]
        for name in ("H", "pos0", "forces0"):
            setattr(opt, name, state.get(name))
        forces = point.forces.copy()
        for constraint in atoms.constraints:
            constraint.adjust_forces(atoms, forces)
        opt.step(forces.ravel())
        state.update(H=opt.H, pos0=opt.pos0, forces0=opt.forces0)
        return atoms.positions.copy()

    # -- the loop ------------------------------------------------------------------------
    def _log(self, point, accepted):
        if self.verbose:
            r = self.record
            print(f"hybrid_optimize: call {self.n_calls - 1:4d} {r['kind'][-1]:<11s} "
                  f"ml_steps {r['ml_steps'][-1]:3d}  E {r['energy'][-1]:.6f} eV  "
                  f"fmax {r['fmax'][-1]:.4f} eV/Å  "
                  f"{'accepted' if accepted else 'rejected'}", file=sys.stderr, flush=True)

    def _decide(self, point, accepted, fd):
        self.record["accepted"].append(bool(accepted))
        self._write(fd, point)
        self._log(point, accepted)

    def run(self):
        fd = None if self.trajectory is None else open(self.trajectory, "w")
        try:
            return self._run(fd)
        finally:
            if fd is not None:
                fd.close()

    def _run(self, fd):
        current = self._reference_call(self.start.positions, "start", 0)
        self._learn(current)
        self._decide(current, True, fd)
        final = current if current.fmax < self.fmax else None

        # ML rounds while they lower the reference energy
        ml = self.ml_steps > 0
        while ml and final is None and self.n_calls < self.max_reference_calls:
            positions, kind, n = self._ml_round(current)
            if positions is None:
                break
            self.n_ml_steps += n
            point = self._reference_call(positions, kind, n)
            self._learn(point)
            accepted = not point.failed and point.energy <= current.energy
            self._decide(point, accepted, fd)
            if point.fmax < self.fmax:
                final = point
            elif accepted:
                current = point
            else:
                ml = False

        # reference BFGS from the force field's Hessian
        state = {}
        while final is None and self.n_calls < self.max_reference_calls:
            if "H0" not in state:
                state["H0"] = self._ml_hessian(current) if self.precondition else None
                if state["H0"] is not None:
                    self.hessian_calls.append(current.call)
            maxstep = self.reference_maxstep
            for _ in range(_RETRIES + 1):
                saved = dict(state)
                positions = self._reference_step(current, state, maxstep)
                point = self._reference_call(positions, "reference", 0)
                self._learn(point)
                self._decide(point, not point.failed, fd)
                if not point.failed or self.n_calls >= self.max_reference_calls:
                    break
                state, maxstep = saved, maxstep / 2  # the same step, half as long
            else:
                from ase.calculators.calculator import CalculationFailed

                raise CalculationFailed(
                    f"the reference calculation failed at {_RETRIES + 1} steps of "
                    f"decreasing length (from {self.reference_maxstep} to {maxstep} Å) from "
                    f"the structure of call {current.call}")
            if point.failed:
                break
            current = point
            if point.fmax < self.fmax:
                final = point
        return self._result(final if final is not None else current, final is not None)

    def _write(self, fd, point):
        if fd is None:
            return
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.io import write

        r = self.record
        call = point.call
        if point.failed:
            atoms = self._atoms(point.positions)
            atoms.info.update(call=call, kind=r["kind"][call], failed=True)
        else:
            atoms = self._atoms(point.positions)
            atoms.calc = SinglePointCalculator(atoms, energy=point.energy, forces=point.forces)
            atoms.info.update(call=call, kind=r["kind"][call], accepted=r["accepted"][call],
                              ml_steps=r["ml_steps"][call], fmax=point.fmax)
        atoms.set_constraint()
        write(fd, atoms, format="extxyz")
        fd.flush()

    def _result(self, final, converged):
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = self._atoms(final.positions)
        atoms.calc = SinglePointCalculator(atoms, energy=final.energy, forces=final.forces)
        r = self.record
        return HybridResult(
            atoms=atoms,
            converged=converged,
            stop_reason="converged" if converged else "reference_calls",
            n_reference_calls=self.n_calls,
            reference_energies=np.array(r["energy"], float),
            reference_fmax=np.array(r["fmax"], float),
            kinds=np.array(r["kind"], dtype=str),
            accepted=np.array(r["accepted"], bool),
            ml_steps=np.array(r["ml_steps"], int),
            n_ml_steps=self.n_ml_steps,
            hessian_calls=self.hessian_calls,
            n_refits=self.n_refits,
            refit_skipped=self.refit_skipped,
            force_field=self.force_field,
            trajectory=self.trajectory,
        )
