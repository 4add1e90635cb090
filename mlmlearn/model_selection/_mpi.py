"""A joblib backend for SPMD runs under ``mpiexec``: tasks dealt round-robin, results broadcast."""

from joblib.parallel import ParallelBackendBase, register_parallel_backend

__all__ = ["MPIBackend"]


class _Task:
    __slots__ = ("owner", "outcome", "callback")

    def __init__(self, owner, outcome, callback):
        self.owner, self.outcome, self.callback = owner, outcome, callback


class MPIBackend(ParallelBackendBase):
    """joblib backend that spreads ``Parallel`` calls over the ranks of an MPI job.

    SPMD contract (the way MPI programs run on a cluster): every rank runs the
    same script on the same data, so every rank makes the same sequence of
    ``Parallel`` calls with the same tasks. All tasks of a call are dispatched
    at once (``pre_dispatch="all"``); task *i* runs on rank ``i % size`` — for
    a search, the folds of one candidate land on different ranks, which keeps
    the ranks' loads even. Results are then collected in order, each
    broadcast from the rank that computed it, so every rank receives every
    result and ends in the same state — a ``GridSearchCV`` fitted under this
    backend has the same ``cv_results_``, ``best_params_`` and refitted model
    on every rank as a serial one (timings aside).

    * A task that raises is re-raised on every rank (scikit-learn's
      ``error_score`` still applies first, inside the task).
    * A rank that dies is MPI's business: ``mpiexec`` (MPICH's Hydra, Open
      MPI, ``srun``) terminates the other ranks and returns non-zero; nothing
      waits forever.
    * Launch on one machine with ``mpiexec -n 2 python script.py`` (use the
      ``mpiexec`` of the environment that has mpi4py), on a cluster with your
      scheduler's launcher, e.g. ``srun -n 64 python script.py``.
    * Outside ``mpiexec`` (one rank) the backend runs everything in-process.
    * BLAS thread pools inside a task are limited to this node's cores divided
      by its ranks, so ranks do not oversubscribe the node.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, default=None
        The communicator; ``MPI.COMM_WORLD`` when None.
    """

    supports_retrieve_callback = False
    supports_timeout = False
    supports_return_generator = False
    supports_sharedmem = False
    uses_threads = False

    def __init__(self, comm=None, nesting_level=None, inner_max_num_threads=None, **kwargs):
        super().__init__(
            nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads, **kwargs
        )
        if comm is None:
            try:
                from mpi4py import MPI
            except ImportError as exc:
                raise ImportError(
                    "the 'mpi' joblib backend needs mpi4py: pip install 'mlmlearn[mpi]'"
                ) from exc
            comm = MPI.COMM_WORLD
        self.comm = comm
        self._count = 0
        # BLAS threads per task: the cores of this node shared among its ranks
        import os

        from mpi4py import MPI

        on_node = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
        self._inner_threads = max(1, (os.cpu_count() or 1) // on_node)

    def effective_n_jobs(self, n_jobs):
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        return self.comm.Get_size()

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **kwargs):
        self.parallel = parallel
        self._count = 0  # every rank numbers the tasks of this call alike
        if parallel is not None:
            # every rank runs its whole share while the tasks are dispatched and
            # only then meets the others to exchange results: no lock-step
            parallel.pre_dispatch = "all"
        return self.effective_n_jobs(n_jobs)

    def submit(self, func, callback=None):
        owner = self._count % self.comm.Get_size()
        self._count += 1
        outcome = None
        if owner == self.comm.Get_rank():
            from threadpoolctl import threadpool_limits

            try:
                with threadpool_limits(self._inner_threads):
                    outcome = (True, func())
            except BaseException as exc:  # sent to every rank, raised there
                outcome = (False, exc)
        return _Task(owner, outcome, callback)

    def retrieve_result(self, out, timeout=None):
        ok, value = self.comm.bcast(out.outcome, root=out.owner)
        if not ok:
            raise value
        if out.callback is not None:
            # joblib dispatches the next batch from a completed task's callback;
            # calling it here, in retrieval order, keeps every rank's sequence of
            # submissions identical
            out.callback(out)
        return value

    def get_nested_backend(self):
        from joblib.parallel import SequentialBackend

        return SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None


register_parallel_backend("mpi", MPIBackend)
