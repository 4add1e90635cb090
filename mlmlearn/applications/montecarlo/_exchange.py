"""Replica exchange (parallel tempering): Metropolis MC at a ladder of temperatures, with
configuration swaps between neighbours, spread over the ranks of an MPI job."""

import json
import math
import os

import numpy as np

__all__ = ["ReplicaExchange"]

_FORMAT = "mlmlearn.applications.montecarlo.exchange/1"


class _Serial:
    """The one-rank stand-in for an mpi4py communicator."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def allgather(self, value):
        return [value]

    def bcast(self, value, root=0):
        return value


class ReplicaExchange:
    r"""Replica-exchange Monte Carlo: one :class:`MonteCarlo` per temperature, swapping.

    Every ``exchange_interval`` MC steps, neighbouring temperatures :math:`T_i < T_{i+1}`
    (the even pairs after even blocks, the odd pairs after odd ones) exchange their
    configurations with probability :math:`\min(1, e^{(\beta_i - \beta_{i+1})(E_i -
    E_{i+1})})`, which keeps every temperature's Boltzmann distribution while hot
    replicas carry cold ones over barriers. Each temperature keeps its own step size
    (adapted in :meth:`equilibrate`, frozen in :meth:`run`) and its own trajectory, so a
    trajectory file is a fixed-temperature ensemble.

    Under MPI (``comm=MPI.COMM_WORLD``, launched by ``mpiexec``/``srun``) replica ``i``
    runs on rank ``i % size``; every rank runs the same script, the ranks share the
    energies and positions after each block and take the same swap decisions (one
    random stream, seeded by ``random_state``), so the result equals the one-process
    run's. Without ``comm`` every replica runs in this process.

    Parameters
    ----------
    atoms : ase.Atoms
        Start structure of every replica (copied).
    temperatures_K : sequence of float
        Increasing.
    calculator : callable, default=None
        Returns a new ASE calculator, one per replica (e.g. ``lambda:
        MLMCalculator(potential)``).
    energy : callable, default=None
        Returns a new energy engine per replica (e.g. ``lambda: IncrementalEnergy(model)``);
        give ``calculator`` or ``energy``.
    exchange_interval : int, default=10
        MC steps between exchange attempts; checkpoints are written after each exchange.
    trajectory : str, default=None
        A file name with ``{temperature}`` (e.g. ``"rex_{temperature:.0f}K.extxyz"``): one
        extended-XYZ trajectory per temperature, each with its checkpoint, and
        ``<first file>.exchange.json`` with the swap statistics and the exchange random
        state. A rerun with the same files resumes bit for bit.
    comm : mpi4py communicator, default=None
    random_state : int, default=0
        Seeds the exchanges and, with each temperature's index, every replica's moves.
    **kwargs
        Passed to every :class:`MonteCarlo` (``moves``, ``step_size``,
        ``acceptance_range``, ``write_interval``, ``verbose``, …).

    Attributes
    ----------
    replicas : dict of int to MonteCarlo
        The replicas this rank runs, by temperature index.
    attempts, accepted : ndarray of int, shape (n_temperatures - 1,)
        Exchange attempts and accepted swaps per neighbouring pair.
    energies : list of list of float
        Per temperature, the energy after every MC step (gathered on every rank).

    Raises
    ------
    ValueError
        Temperatures not increasing or fewer than two; neither or both of
        ``calculator`` and ``energy``; a ``trajectory`` without ``{temperature}``.

    Examples
    --------
    >>> from ase.calculators.emt import EMT
    >>> from ase.cluster import Icosahedron
    >>> from mlmlearn.applications.montecarlo import AtomMoves, ReplicaExchange
    >>> rex = ReplicaExchange(Icosahedron("Cu", 2), [300.0, 450.0, 700.0], calculator=EMT,
    ...                       moves=AtomMoves(), exchange_interval=5, random_state=0)
    >>> rex.equilibrate(10)
    >>> rex.run(20)
    >>> rex.attempts.tolist(), len(rex.energies[0])
    ([3, 3], 30)
    """

    def __init__(self, atoms, temperatures_K, *, calculator=None, energy=None,
                 exchange_interval=10, trajectory=None, comm=None, random_state=0, **kwargs):
        from ._engine import MonteCarlo

        temperatures = [float(t) for t in temperatures_K]
        if len(temperatures) < 2 or np.any(np.diff(temperatures) <= 0):
            raise ValueError(f"temperatures_K={temperatures_K!r} must be two or more "
                             "increasing temperatures")
        if (calculator is None) == (energy is None):
            raise ValueError("give calculator= (a factory of ASE calculators) or energy= (a "
                             "factory of energy engines), one of them")
        if trajectory is not None and "{temperature" not in str(trajectory):
            raise ValueError(f"trajectory={trajectory!r} needs '{{temperature}}' in it, one "
                             "file per temperature")
        if not (isinstance(exchange_interval, int) and exchange_interval >= 1):
            raise ValueError(f"exchange_interval={exchange_interval!r} must be a positive int")
        self.temperatures_K = temperatures
        self.exchange_interval = exchange_interval
        self.comm = _Serial() if comm is None else comm
        rank, size = self.comm.Get_rank(), self.comm.Get_size()
        self.trajectory = trajectory
        n = len(temperatures)
        self.files = [None if trajectory is None else str(trajectory).format(temperature=t)
                      for t in temperatures]
        self.state_file = None if trajectory is None else self.files[0] + ".exchange.json"
        self.replicas = {}
        for i in range(rank, n, size):
            replica = atoms.copy()
            replica.calc = calculator() if calculator is not None else None
            self.replicas[i] = MonteCarlo(
                replica, temperatures[i], energy=None if energy is None else energy(),
                trajectory=self.files[i], checkpoint_interval=exchange_interval,
                random_state=np.random.default_rng([random_state, i]), **kwargs)
        self.rng = np.random.default_rng([random_state, n])
        self.attempts = np.zeros(n - 1, dtype=int)
        self.accepted = np.zeros(n - 1, dtype=int)
        self._blocks = 0
        self.energies = [[] for _ in range(n)]
        fresh = not self._resume()
        self._gather_energies()
        if fresh and self.state_file is not None and self.comm.Get_rank() == 0:
            self._save_state({}, {})  # a fresh run: its settings, for a resume to check

    # -- the two phases --------------------------------------------------------------
    def equilibrate(self, n_steps):
        """Run every replica to ``n_steps`` equilibration steps (step sizes adapted),
        exchanging every ``exchange_interval`` steps."""
        self._advance("equilibrate", n_steps)

    def run(self, n_steps):
        """Run every replica to ``n_steps`` production steps, exchanging as it goes."""
        self._advance("run", n_steps)

    def _advance(self, method, n_steps):
        k = self.exchange_interval
        while True:
            done = self._least("equilibrate" if method == "equilibrate" else "run")
            if done >= n_steps:
                return
            total = self._least("all")
            target = min(n_steps, done + k - total % k)  # to the next exchange, or the end
            for mc in self.replicas.values():  # a replica already there does nothing
                getattr(mc, method)(target)
            if (total + target - done) % k == 0:
                self._exchange()

    def _least(self, what):
        """The fewest steps any replica (on any rank) has done: of equilibration, of
        production, or in all. After an interruption some may be a block ahead."""
        def count(mc):
            return {"equilibrate": mc.n_equilibration_steps, "run": mc.n_production_steps,
                    "all": mc.n_equilibration_steps + mc.n_production_steps}[what]
        return min(self.comm.allgather(min(count(mc) for mc in self.replicas.values())))

    # -- exchanges ---------------------------------------------------------------------
    def _exchange(self):
        local = {i: (mc.energy, mc.atoms.positions.copy()) for i, mc in self.replicas.items()}
        shared = {}
        for part in self.comm.allgather(local):
            shared.update(part)
        n = len(self.temperatures_K)
        beta = 1.0 / (_kB() * np.array(self.temperatures_K))
        order = list(range(n))  # order[i]: the replica whose configuration temperature i gets
        for i in range(self._blocks % 2, n - 1, 2):
            self.attempts[i] += 1
            e_i, e_j = shared[order[i]][0], shared[order[i + 1]][0]
            if self.rng.random() < math.exp(min(0.0, (beta[i] - beta[i + 1]) * (e_i - e_j))):
                order[i], order[i + 1] = order[i + 1], order[i]
                self.accepted[i] += 1
        self._blocks += 1
        moved = {i: order[i] for i in range(n) if order[i] != i}
        self._save_state(moved, shared)
        self._apply(moved, shared)

    def _apply(self, moved, shared):
        for i, mc in self.replicas.items():
            if i in moved:
                mc.atoms.positions[:] = shared[moved[i]][1]
                mc.energy = mc._checked(mc.engine.start(mc.atoms), "after an exchange")
            if mc.checkpoint is not None:
                mc._write_checkpoint()
        self._gather_energies()

    def _gather_energies(self):
        local = {i: list(mc.energies) for i, mc in self.replicas.items()}
        for part in self.comm.allgather(local):
            for i, values in part.items():
                self.energies[i] = values

    # -- checkpoint ------------------------------------------------------------------------
    def _save_state(self, moved, shared):
        if self.state_file is None or self.comm.Get_rank() != 0:
            return
        state = {
            "format": _FORMAT,
            "temperatures_K": self.temperatures_K,
            "exchange_interval": self.exchange_interval,
            "blocks": self._blocks,
            "attempts": self.attempts.tolist(),
            "accepted": self.accepted.tolist(),
            "rng": self.rng.bit_generator.state,
            # the swapped configurations of the last exchange, for a resume that finds the
            # replicas' checkpoints written before it
            "moved": {str(i): [float(shared[j][0]), shared[j][1].tolist()]
                      for i, j in moved.items()},
        }
        temporary = self.state_file + ".tmp"
        with open(temporary, "w") as fh:
            json.dump(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, self.state_file)

    def _resume(self):
        from .._checkpoint import ResumeError

        if self.state_file is None:
            return
        # one decision for all ranks: rank 0 reads the file, every rank gets its content
        state = None
        if self.comm.Get_rank() == 0 and os.path.exists(self.state_file):
            with open(self.state_file) as fh:
                state = json.load(fh)
        state = self.comm.bcast(state, root=0)
        if state is None:
            return False
        for key in ("temperatures_K", "exchange_interval"):
            if state[key] != getattr(self, key):
                raise ResumeError(f"{key}={getattr(self, key)!r} differs from {state[key]!r}, "
                                  f"with which {self.state_file!r} was written")
        self._blocks = state["blocks"]
        self.attempts = np.array(state["attempts"])
        self.accepted = np.array(state["accepted"])
        self.rng.bit_generator.state = state["rng"]
        k = self.exchange_interval
        least = self._least("all")
        block_end = least // k
        if least % k == 0 and block_end == self._blocks + 1:
            self._exchange()  # interrupted before the exchange that ended this block
        elif block_end == self._blocks:
            # the last exchange was decided; at a block's end, replicas whose checkpoint
            # predates it take its configurations (the others are past it or not swapped)
            for i, mc in (self.replicas.items() if least % k == 0 else ()):
                at = mc.n_equilibration_steps + mc.n_production_steps
                if at == least and str(i) in state["moved"]:
                    energy, positions = state["moved"][str(i)]
                    if not np.array_equal(mc.atoms.positions, np.array(positions)):
                        mc.atoms.positions[:] = positions
                        mc.energy = mc._checked(mc.engine.start(mc.atoms), "after an exchange")
        else:
            raise ResumeError(
                f"{self.state_file!r} records {self._blocks} exchanges, the replicas' "
                f"checkpoints are at block {block_end}")
        return True


def _kB():
    from ase import units

    return units.kB
