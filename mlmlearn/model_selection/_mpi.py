"""A joblib backend for SPMD runs under ``mpiexec``: tasks dealt round-robin, results broadcast."""

import os
import pickle
import traceback

from joblib.parallel import ParallelBackendBase, register_parallel_backend

__all__ = ["MPIBackend", "MPITransferError"]

#: Bytes per broadcast of a result: well below the 2**31 - 1 element count that any MPI
#: accepts, so a result of any size travels in pieces.
_CHUNK = 2**30


class MPITransferError(RuntimeError):
    """A task's outcome could not be moved between the ranks of the ``"mpi"`` backend.

    Raised on **every** rank alike (same type, same message) when the result of a
    task (or the exception it raised) cannot be pickled on the rank that ran it,
    received (memory), or unpickled on another rank. The message names the task,
    the rank where the failure happened and the original error.
    """


def _dumps(obj):
    # cloudpickle, as joblib's default (loky) backend: lambdas and functions defined in
    # the script (e.g. inside a FunctionTransformer of a returned estimator) travel
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - joblib < 1.6 vendors it
        from joblib.externals import cloudpickle
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _describe(exc):
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"


class _Task:
    """One submitted task: on its owner, the outcome and its serialised form."""

    __slots__ = ("index", "owner", "header", "value", "payload", "cause", "callback")

    def __init__(self, index, owner, callback):
        self.index, self.owner, self.callback = index, owner, callback
        self.header = self.value = self.payload = self.cause = None


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

    * A task that raises is re-raised on every rank, with the same type and
      message (scikit-learn's ``error_score`` still applies first, inside the
      task); the traceback from the rank that ran it is attached as a note.
    * Results travel as cloudpickle bytes, as with joblib's default backend
      (lambdas and script-defined functions included), in pieces of at most
      1 GiB, so no MPI message-size limit applies. If a result or an
      exception cannot be pickled, received or unpickled on any rank, every
      rank raises the same :class:`MPITransferError` and the job ends (the
      ranks agree on each transfer collectively; none proceeds alone).
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

    Raises
    ------
    ImportError
        If mpi4py is not installed (from a clone of mlmlearn:
        ``pip install ".[mpi]"``).
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
        from .._optional import import_optional

        MPI = import_optional("mpi4py.MPI", purpose="the 'mpi' joblib backend")
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self._count = 0
        # BLAS threads per task: the cores of this node shared among its ranks
        on_node = self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
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
        index = self._count
        self._count += 1
        task = _Task(index, index % self.comm.Get_size(), callback)
        if task.owner == self.comm.Get_rank():
            from threadpoolctl import threadpool_limits

            try:
                with threadpool_limits(self._inner_threads):
                    task.value = func()
                raised = False
            except BaseException as exc:  # sent to every rank, raised there
                task.value, raised = exc, True
            self._pack(task, raised)
        return task

    def _pack(self, task, raised):
        """Serialise the owner's outcome; a failure becomes an error header, never an escape."""
        where = f"task {task.index} of this Parallel call (run on rank {task.owner})"
        try:
            task.payload = _dumps(task.value)
        except BaseException as exc:
            if raised:
                task.cause = task.value
                problem = (f"{where} raised {_describe(task.value)}; that exception could not "
                           f"be pickled to send it to the other ranks ({_describe(exc)})")
            else:
                task.cause = exc
                problem = (f"the result of {where} could not be pickled to send it to the other "
                           f"ranks: {_describe(exc)}")
            task.header = ("error", problem)
            return
        if raised:
            task.header = ("raised", len(task.payload),
                           "".join(traceback.format_exception(task.value)))
        else:
            task.header = ("result", len(task.payload), None)

    def _agree(self, problem, what):
        """Collectively check that no rank failed ``what``; else raise the same error everywhere."""
        from mpi4py import MPI

        rank, size = self.comm.Get_rank(), self.comm.Get_size()
        failed = self.comm.allreduce(size if problem is None else rank, op=MPI.MIN)
        if failed == size:
            return
        message = f"{what} failed on rank {rank}: {_describe(problem)}" if rank == failed else None
        raise MPITransferError(self.comm.bcast(message, root=failed)) from problem

    def retrieve_result(self, out, timeout=None):
        from mpi4py import MPI

        comm, owner = self.comm, out.owner
        mine = comm.Get_rank() == owner
        # a small header first: (kind, size, traceback) or ("error", message)
        header = comm.bcast(out.header if mine else None, root=owner)
        if header[0] == "error":
            cause, out.value = out.cause, None
            raise MPITransferError(header[1]) from cause
        kind, nbytes, remote = header
        what = f"moving the {nbytes}-byte outcome of task {out.index} from rank {owner}"
        buffer, problem = out.payload, None
        if not mine:
            try:
                buffer = bytearray(nbytes)
            except BaseException as exc:  # MemoryError
                problem = exc
        self._agree(problem, what)
        view = memoryview(buffer)
        for start in range(0, nbytes, _CHUNK):
            comm.Bcast([view[start : start + _CHUNK], MPI.BYTE], root=owner)
        value = out.value if mine else None
        if not mine:
            try:
                value = pickle.loads(buffer)
            except BaseException as exc:
                problem = exc
        del view, buffer
        out.payload = out.value = None
        self._agree(problem, what.replace("moving", "unpickling"))
        if kind == "raised":
            if not mine and hasattr(value, "add_note"):
                value.add_note(f"(raised on MPI rank {owner}; its traceback there:)\n{remote}")
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
