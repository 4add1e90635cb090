"""Metropolis Monte Carlo on any ASE calculator that gives energies (thesis eq. 2.34, paper II)."""

import io
import json
import math
import numbers
import os

import numpy as np

from ..._progress import progress_bar
from .._checkpoint import (
    check_settings,
    check_start,
    check_trajectory,
    load_checkpoint,
    save_checkpoint,
)
from ._moves import GoldThiolateMoves, MoveSet

__all__ = ["MonteCarlo", "CalculatorEnergy"]

_CHECKPOINT_FORMAT = "mlmlearn.applications.montecarlo/1"
_PHASES = ("equilibration", "production")


class CalculatorEnergy:
    """Trial energies from the structure's ASE calculator: one full calculation per trial.

    The energy protocol of :class:`MonteCarlo`: :meth:`start` binds the structure and
    returns its energy; :meth:`trial` moves some atoms and returns the new energy;
    :meth:`accept` or :meth:`reject` settles it; :meth:`get_state` and
    :meth:`set_state` give and take what a checkpoint must hold beyond the positions
    (nothing here). An incremental model
    (:class:`~mlmlearn.applications.montecarlo.IncrementalEnergy`) implements the same.
    """

    def __init__(self):
        self.atoms = None
        self._undo = None

    def start(self, atoms):
        self.atoms = atoms
        return self._get()

    def get_state(self):
        return {}

    def set_state(self, state):
        pass

    def trial(self, indices, positions):
        self._undo = (indices, self.atoms.positions[indices].copy())
        self.atoms.positions[indices] = positions
        return self._get()

    def accept(self):
        self._undo = None

    def reject(self):
        indices, old = self._undo
        self.atoms.positions[indices] = old
        self._undo = None

    def _get(self):
        from ase.calculators.calculator import PropertyNotImplementedError

        calc = self.atoms.calc
        if calc is None:
            raise ValueError("atoms has no calculator: attach one that gives the energy "
                             "(atoms.calc = ...) before Monte Carlo")
        try:
            return float(self.atoms.get_potential_energy())
        except PropertyNotImplementedError as error:
            raise ValueError(
                f"the calculator {type(calc).__name__} gives no energy, which Metropolis Monte "
                "Carlo needs (a force field without an energy model cannot drive it)") from error


class MonteCarlo:
    r"""Metropolis Monte Carlo at temperature T with the energies of any ASE calculator.

    A trial move of one moving part is accepted with probability
    :math:`\min(1, e^{-(E_{i+1} - E_i)/k_B T})` (thesis eq. 2.34). One MC step
    proposes a move of every part once, in random order (paper II: 86 trial moves
    for Au38(SCH3)24, 61 for Au25(SCH3)18). One step size serves every part; during
    :meth:`equilibrate` it is adapted after each MC step so that the acceptance stays
    within ``acceptance_range`` (thesis section 2.5: 40–60 %); :meth:`run` samples with
    it frozen, since adapting it while sampling breaks detailed balance. The switch is
    yours: call :meth:`equilibrate`, then :meth:`run`.

    Both calls take the *total* number of steps of their phase, so a script rerun after
    an interruption continues where the run stopped: with ``trajectory`` given, a
    checkpoint ``trajectory + ".checkpoint.npz"`` is written every
    ``checkpoint_interval`` steps and at the end of each call, and a new
    ``MonteCarlo`` on the same file resumes from it (structure, energy, step size,
    random generator state), continuing bit for bit as the uninterrupted run would
    (given a deterministic calculator). Frames written after the checkpoint are cut.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure, with a calculator that gives ``energy`` (eV), e.g.
        :class:`~mlmlearn.forcefield.MLMCalculator` of a potential or of an energy
        model, or tblite's. Moved in place.
    temperature_K : float
        K, > 0.
    moves : MoveSet or sequence of Part, default=None
        The moving parts: :class:`GoldThiolateMoves` (None, paper II's set) or
        :class:`AtomMoves` or your own.
    step_size : float, default=0.05
        Å, the start value (equilibration adapts it).
    acceptance_range : (float, float), default=(0.4, 0.6)
        During equilibration, a step whose acceptance is below the first value
        multiplies the step size by ``1 / adapt_factor``, above the second by
        ``adapt_factor``.
    adapt_factor : float, default=1.05
    trajectory : str or path, default=None
        Extended-XYZ file: the start frame and every ``write_interval``-th MC step,
        with ``energy`` and ``info`` keys ``mc_step``, ``phase``, ``acceptance``
        (of that step) and ``step_size`` (with which it ran).
    write_interval : int, default=1
    checkpoint_interval : int, default=10
        MC steps between checkpoints (with ``trajectory``).
    resume : bool, default=True
        Continue from the checkpoint next to ``trajectory`` if there is one;
        False starts over (the file is overwritten).
    random_state : int, numpy.random.Generator or None, default=None
    verbose : int, default=0
        A progress bar when > 0.
    energy : CalculatorEnergy or IncrementalEnergy, default=None
        Where trial energies come from: the calculator, one full calculation per trial
        (None), or :class:`~mlmlearn.applications.montecarlo.IncrementalEnergy` of paper
        II's MBTR → EMLM model, which updates only the moved atoms' pairs.

    Attributes
    ----------
    parts : list of Part
    step_size : float
        The current step size (Å).
    energy : float
        The current energy (eV).
    n_equilibration_steps, n_production_steps : int
        MC steps done in each phase.
    energies, acceptance, step_sizes, phases : list
        Per MC step (equilibration then production): energy after the step (eV),
        accepted fraction of its trial moves, step size it ran with, its phase.

    Raises
    ------
    ValueError
        ``temperature_K`` ≤ 0 or not finite, a non-positive ``step_size``, a bad
        ``acceptance_range``; a structure without a calculator, or whose calculator
        gives no energy; a NaN or infinite energy (at the start or at a trial move:
        the message names the MC step and the part; the trajectory keeps every frame
        written before it).
    StructureNotRecognizedError
        If ``moves`` cannot split the structure into parts.
    ResumeError
        If the checkpoint was written for another structure or other settings.

    Examples
    --------
    >>> from ase.calculators.emt import EMT
    >>> from mlmlearn.applications.montecarlo import AtomMoves, MonteCarlo
    >>> from ase.cluster import Icosahedron
    >>> atoms = Icosahedron("Cu", 2)
    >>> atoms.calc = EMT()
    >>> mc = MonteCarlo(atoms, 300.0, moves=AtomMoves(), random_state=0)
    >>> mc.equilibrate(20)      # adapts the step size
    >>> mc.run(50)              # samples with it frozen
    >>> len(mc.energies), 0.0 < mc.acceptance[-1] < 1.0
    (70, True)
    """

    def __init__(self, atoms, temperature_K, *, moves=None, step_size=0.05,
                 acceptance_range=(0.4, 0.6), adapt_factor=1.05, trajectory=None,
                 write_interval=1, checkpoint_interval=10, resume=True, random_state=None,
                 verbose=0, energy=None):
        if not (isinstance(temperature_K, numbers.Real) and math.isfinite(temperature_K)
                and temperature_K > 0):
            raise ValueError(f"temperature_K={temperature_K!r} must be a positive number (K)")
        if not (isinstance(step_size, numbers.Real) and step_size > 0):
            raise ValueError(f"step_size={step_size!r} must be a positive number (Å)")
        low, high = acceptance_range
        if not 0 < low < high < 1:
            raise ValueError(f"acceptance_range={acceptance_range!r} must be (low, high) with "
                             "0 < low < high < 1")
        if not adapt_factor > 1:
            raise ValueError(f"adapt_factor={adapt_factor!r} must be > 1")
        for name, value in (("write_interval", write_interval),
                            ("checkpoint_interval", checkpoint_interval)):
            if not (isinstance(value, numbers.Integral) and value >= 1):
                raise ValueError(f"{name}={value!r} must be a positive integer")
        from ase import units

        self.atoms = atoms
        self.temperature_K = float(temperature_K)
        self.kT = units.kB * self.temperature_K
        self.moves = GoldThiolateMoves() if moves is None else moves
        self.parts = (self.moves.parts(atoms) if isinstance(self.moves, MoveSet)
                      else list(self.moves))
        if not self.parts:
            raise ValueError("moves gives no moving part")
        self.acceptance_range = (float(low), float(high))
        self.adapt_factor = float(adapt_factor)
        self.trajectory = None if trajectory is None else os.fspath(trajectory)
        self.checkpoint = None if trajectory is None else self.trajectory + ".checkpoint.npz"
        self.write_interval = int(write_interval)
        self.checkpoint_interval = int(checkpoint_interval)
        self.verbose = verbose
        self.engine = CalculatorEnergy() if energy is None else energy
        self.rng = (random_state if isinstance(random_state, np.random.Generator)
                    else np.random.default_rng(random_state))
        self.step_size = float(step_size)
        self.n_equilibration_steps = 0
        self.n_production_steps = 0
        self.energies, self.acceptance, self.step_sizes, self.phases = [], [], [], []
        self._traj_bytes = 0
        self._start = atoms.positions.copy()

        restored = self._restore() if (resume and self.checkpoint) else None
        energy = self._checked(self.engine.start(atoms), "at the start structure")
        if restored is not None:
            self.engine.set_state({k[len("engine_"):]: v for k, v in restored.items()
                                   if k.startswith("engine_")})
        else:
            self.energy = energy
            if self.trajectory is not None:
                with open(self.trajectory, "wb"):
                    pass
                self._write_frame(0, "start", float("nan"))
                self._write_checkpoint()

    # -- the two phases --------------------------------------------------------------
    def equilibrate(self, n_steps):
        """Run until ``n_steps`` equilibration steps are done, adapting the step size.

        Raises
        ------
        ValueError
            If production has started (equilibration comes first).
        """
        if self.n_production_steps and n_steps > self.n_equilibration_steps:
            raise ValueError(
                f"equilibrate({n_steps}) after {self.n_production_steps} production steps: "
                "the step size is frozen once production starts")
        self._advance("equilibration", n_steps)

    def run(self, n_steps):
        """Run until ``n_steps`` production steps are done, the step size frozen."""
        self._advance("production", n_steps)

    def _advance(self, phase, n_steps):
        if not (isinstance(n_steps, numbers.Integral) and n_steps >= 0):
            raise ValueError(f"n_steps={n_steps!r} must be a non-negative integer")
        done = (self.n_equilibration_steps if phase == "equilibration"
                else self.n_production_steps)
        if done >= n_steps:
            return
        bar = progress_bar(n_steps, verbose=self.verbose, desc=f"MC {phase}", unit="step")
        bar.update(done)
        try:
            while done < n_steps:
                self._step(phase)
                done += 1
                bar.update(1)
                bar.set_postfix_str(f"E={self.energy:.4f} acc={self.acceptance[-1]:.2f} "
                                    f"step={self.step_sizes[-1]:.4f}")
                if self.checkpoint is not None and (
                        len(self.energies) % self.checkpoint_interval == 0 or done == n_steps):
                    self._write_checkpoint()
        finally:
            bar.close()

    def _step(self, phase):
        step = len(self.energies) + 1
        accepted = 0
        for p in self.rng.permutation(len(self.parts)):
            part = self.parts[p]
            new = part.propose(self.atoms.positions, self.step_size, self.rng)
            trial = self.engine.trial(part.indices, new)
            if not math.isfinite(trial):
                self.engine.reject()
                raise ValueError(
                    f"the energy is {trial} at MC step {step}, trial move of part "
                    f"{part.label} (atoms {part.indices.tolist()}); the structure is back at "
                    "its last accepted state")
            delta = trial - self.energy
            if delta <= 0.0 or self.rng.random() < math.exp(-delta / self.kT):
                self.engine.accept()
                self.energy = trial
                accepted += 1
            else:
                self.engine.reject()
        rate = accepted / len(self.parts)
        self.energies.append(self.energy)
        self.acceptance.append(rate)
        self.step_sizes.append(self.step_size)
        self.phases.append(phase)
        if phase == "equilibration":
            self.n_equilibration_steps += 1
            low, high = self.acceptance_range
            if rate < low:
                self.step_size /= self.adapt_factor
            elif rate > high:
                self.step_size *= self.adapt_factor
        else:
            self.n_production_steps += 1
        if self.trajectory is not None and step % self.write_interval == 0:
            self._write_frame(step, phase, rate)

    def _checked(self, energy, where):
        if not math.isfinite(energy):
            raise ValueError(f"the energy is {energy} {where}")
        return energy

    # -- trajectory and checkpoint ---------------------------------------------------
    def _write_frame(self, step, phase, rate):
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.io import write

        frame = self.atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=self.energy)
        frame.info.update(mc_step=step, phase=phase, acceptance=rate,
                          step_size=self.step_sizes[-1] if self.step_sizes else self.step_size)
        text = io.StringIO()
        # parallel=False: under MPI, ASE would otherwise write on rank 0 only, and each rank
        # writes its own replicas' files (ReplicaExchange)
        write(text, frame, format="extxyz", parallel=False)
        with open(self.trajectory, "ab") as fd:
            fd.write(text.getvalue().encode())
            fd.flush()
            os.fsync(fd.fileno())
            self._traj_bytes = fd.tell()

    def _settings(self):
        return {
            "temperature_K": self.temperature_K,
            "moves": repr(self.moves) if isinstance(self.moves, MoveSet) else None,
            "parts": [p.indices.tolist() for p in self.parts],
            "acceptance_range": list(self.acceptance_range),
            "adapt_factor": self.adapt_factor,
            "write_interval": self.write_interval,
        }

    def _write_checkpoint(self):
        state = {
            "step_size": self.step_size,
            "energy": self.energy,
            "n_equilibration_steps": self.n_equilibration_steps,
            "n_production_steps": self.n_production_steps,
            "traj_bytes": self._traj_bytes,
            "rng": self.rng.bit_generator.state,
            "rng_class": type(self.rng.bit_generator).__name__,
            "phases": self.phases,
        }
        arrays = {
            "format": np.array(_CHECKPOINT_FORMAT),
            "settings": np.array(json.dumps(self._settings())),
            "state": np.array(json.dumps(state)),
            "numbers": self.atoms.numbers,
            "start_positions": self._start,
            "positions": self.atoms.positions,
            "energies": np.array(self.energies, float),
            "acceptance": np.array(self.acceptance, float),
            "step_sizes": np.array(self.step_sizes, float),
        }
        # the energy engine's own state (an incremental model's features and distances),
        # so that a resumed run continues bit for bit
        arrays.update({f"engine_{k}": np.asarray(v) for k, v in self.engine.get_state().items()})
        save_checkpoint(self.checkpoint, arrays)

    def _restore(self):
        """Load the checkpoint into this run; None when there is none to resume."""
        saved = load_checkpoint(self.checkpoint, self.trajectory, _CHECKPOINT_FORMAT)
        if saved is None:
            return None
        check_start(saved, self.atoms, self._start, self.checkpoint)
        check_settings(saved, self._settings(), self.checkpoint)
        state = json.loads(str(saved["state"]))
        check_trajectory(self.trajectory, state["traj_bytes"])
        with open(self.trajectory, "r+b") as fd:
            fd.truncate(state["traj_bytes"])
        bit_generator = getattr(np.random, state["rng_class"])()
        bit_generator.state = state["rng"]
        self.rng = np.random.Generator(bit_generator)
        self.atoms.positions[:] = saved["positions"]
        self.step_size = state["step_size"]
        self.energy = state["energy"]
        self.n_equilibration_steps = state["n_equilibration_steps"]
        self.n_production_steps = state["n_production_steps"]
        self._traj_bytes = state["traj_bytes"]
        self.energies = saved["energies"].tolist()
        self.acceptance = saved["acceptance"].tolist()
        self.step_sizes = saved["step_sizes"].tolist()
        self.phases = state["phases"]
        return saved
