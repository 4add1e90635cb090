"""The "mpi" joblib backend under a real ``mpiexec -n 2``: serial results, errors surface."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")
MPIEXEC = Path(sys.executable).parent / "mpiexec"
if not MPIEXEC.exists():  # the launcher of the mpich wheel sits beside the interpreter
    pytest.skip(f"no mpiexec beside {sys.executable}", allow_module_level=True)

SEARCH = """
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from mlmlearn import EMLM

X, y = load_diabetes(return_X_y=True)
# references=500 > the ~353 training samples of a fold: that candidate fails
grid = {"references": [20, 50, 500], "beta": [1e-8, 1.0]}


def search(error_score=np.nan):
    return GridSearchCV(EMLM(), grid, cv=KFold(4, shuffle=True, random_state=0),
                        error_score=error_score)
"""


def _run_mpi(tmp_path, body, n=2, timeout=240, prelude=SEARCH, name="job.py"):
    script = tmp_path / name
    script.write_text(prelude + textwrap.dedent(body))
    import mlmlearn

    # the ranks import the mlmlearn under test, installed or not
    path = [str(Path(mlmlearn.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
    }
    # a session of its own, so that a hung job is ended whole (mpiexec and its ranks)
    with subprocess.Popen(
        [str(MPIEXEC), "-n", str(n), sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    ) as job:
        try:
            stdout, stderr = job.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.communicate()
            raise
    return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)


def _serial():
    namespace = {}
    exec(SEARCH, namespace)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = namespace["search"]().fit(*namespace["load_diabetes"](return_X_y=True))
    return namespace, s


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::sklearn.exceptions.FitFailedWarning")
def test_grid_search_over_two_ranks_equals_the_serial_one(tmp_path):
    result = _run_mpi(
        tmp_path,
        """
        import warnings
        import joblib
        from mpi4py import MPI
        import mlmlearn.model_selection  # registers "mpi"

        warnings.simplefilter("ignore")
        s = search()
        with joblib.parallel_backend("mpi"):
            s.fit(X, y)
            cv = cross_validate(EMLM(references=50), X, y, cv=5)
        rank = MPI.COMM_WORLD.Get_rank()
        np.savez(f"rank{rank}.npz", scores=s.cv_results_["mean_test_score"],
                 split0=s.cv_results_["split0_test_score"], best=str(s.best_params_),
                 predictions=s.predict(X[:20]), cv=cv["test_score"])
    """,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    namespace, serial = _serial()
    X, y = namespace["load_diabetes"](return_X_y=True)
    serial_cv = namespace["cross_validate"](namespace["EMLM"](references=50), X, y, cv=5)
    for rank in (0, 1):
        got = np.load(tmp_path / f"rank{rank}.npz")
        np.testing.assert_array_equal(got["scores"], serial.cv_results_["mean_test_score"])
        np.testing.assert_array_equal(got["split0"], serial.cv_results_["split0_test_score"])
        assert str(got["best"]) == str(serial.best_params_)
        np.testing.assert_array_equal(got["predictions"], serial.predict(X[:20]))
        np.testing.assert_array_equal(got["cv"], serial_cv["test_score"])
    # the failing candidate followed error_score, on both ranks alike
    assert np.isnan(serial.cv_results_["mean_test_score"]).sum() == 2


def test_error_score_raise_stops_every_rank(tmp_path):
    result = _run_mpi(
        tmp_path,
        """
        import joblib
        import mlmlearn.model_selection

        with joblib.parallel_backend("mpi"):
            search(error_score="raise").fit(X, y)
    """,
    )
    assert result.returncode != 0
    assert "too few samples" in result.stderr


def test_a_rank_that_dies_is_reported_not_waited_for(tmp_path):
    result = _run_mpi(
        tmp_path,
        """
        import os
        import joblib
        from joblib import Parallel, delayed
        from mpi4py import MPI
        import mlmlearn.model_selection

        def task(i):
            if MPI.COMM_WORLD.Get_rank() == 1:
                os._exit(7)  # a crash: no exception, no goodbye
            return i

        with joblib.parallel_backend("mpi"):
            Parallel()(delayed(task)(i) for i in range(6))
    """,
        timeout=120,
    )
    assert result.returncode != 0  # and subprocess.run's timeout did not fire


TRANSFERS = """
import json
import threading

import joblib
from joblib import Parallel, delayed
from mpi4py import MPI

from mlmlearn.model_selection import _mpi


def explode():
    raise ValueError("cannot be rebuilt here")


class Fragile:  # pickles on its rank, fails to unpickle on the others
    def __reduce__(self):
        return (explode, ())


class TwoArguments(Exception):  # the classic exception that pickles but does not unpickle
    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


def task(i, kind):
    if i != 3:  # task 3 runs on rank 1 of 2
        return i
    if kind == "lambda":
        return lambda x: x + 1
    if kind == "lock":
        return threading.Lock()
    if kind == "fragile":
        return Fragile()
    if kind == "raises":
        raise KeyError("k3")
    if kind == "two arguments":
        raise TwoArguments(1, 2)
    if kind == "unpicklable exception":
        exc = RuntimeError("holds a lock")
        exc.lock = threading.Lock()
        raise exc
    if kind == "pieces":
        return list(range(1000))


outcomes = {}
for kind in ["lambda", "lock", "fragile", "raises", "two arguments", "unpicklable exception",
             "pieces", "after"]:
    _mpi._CHUNK = 7 if kind == "pieces" else 2**30  # a result in many broadcasts
    try:
        with joblib.parallel_backend("mpi"):
            r = Parallel()(delayed(task)(i, kind) for i in range(6))
        value = r[3](1) if kind == "lambda" else sum(r[3]) if kind == "pieces" else r
        outcomes[kind] = ["ok", value]
    except Exception as exc:
        outcomes[kind] = [type(exc).__name__, str(exc)]
with open(f"rank{MPI.COMM_WORLD.Get_rank()}.json", "w") as f:
    json.dump(outcomes, f)
"""


def test_every_transfer_failure_reaches_every_rank_as_the_same_exception(tmp_path):
    """Pickling, unpickling and multi-piece transfers: all ranks agree, nobody waits."""
    import json

    result = _run_mpi(tmp_path, TRANSFERS, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    got = ranks[0]
    assert got["lambda"] == ["ok", 2]  # cloudpickle, as joblib's default backend
    assert got["pieces"] == ["ok", sum(range(1000))]
    assert got["raises"] == ["KeyError", "'k3'"]
    for kind, words in [
        ("lock", ["task 3", "rank 1", "could not be pickled", "_thread.lock"]),
        ("fragile", ["task 3", "unpickling", "failed on rank 0", "cannot be rebuilt here"]),
        ("two arguments", ["unpickling", "failed on rank 0", "missing 1 required"]),
        ("unpicklable exception", ["raised builtins.RuntimeError: holds a lock", "_thread.lock"]),
    ]:
        assert got[kind][0] == "MPITransferError", (kind, got[kind])
        assert all(w in got[kind][1] for w in words), (kind, got[kind])
    assert got["after"] == ["ok", [0, 1, 2, None, 4, 5]]  # the backend is usable after


def test_an_unpicklable_result_ends_the_job_instead_of_hanging(tmp_path):
    result = _run_mpi(
        tmp_path,
        """
        import threading
        import joblib
        from joblib import Parallel, delayed
        import mlmlearn.model_selection

        def task(i):
            return threading.Lock() if i == 1 else i

        with joblib.parallel_backend("mpi"):
            Parallel()(delayed(task)(i) for i in range(4))
    """,
        timeout=60,
    )
    assert result.returncode != 0  # and subprocess.run's timeout did not fire
    assert "MPITransferError" in result.stderr
    assert "could not be pickled" in result.stderr


LAMBDA_MODEL = """
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

model = make_pipeline(FunctionTransformer(lambda Z: 2 * Z), EMLM(references=30))
"""


def test_cross_validate_returns_estimators_with_a_lambda_on_every_rank(tmp_path):
    """The issue's case: cross_validate(return_estimator=True), FunctionTransformer(lambda)."""
    body = """
        import joblib
        from mpi4py import MPI
        import mlmlearn.model_selection

        with joblib.parallel_backend("mpi"):
            cv = cross_validate(model, X, y, cv=4, return_estimator=True)
        predictions = [e.predict(X[:10]) for e in cv["estimator"]]
        np.save(f"rank{MPI.COMM_WORLD.Get_rank()}.npy", np.array(predictions))
    """
    result = _run_mpi(tmp_path, LAMBDA_MODEL + textwrap.dedent(body), timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    namespace = {}
    exec(SEARCH + LAMBDA_MODEL, namespace)
    X, y = namespace["X"], namespace["y"]
    serial = namespace["cross_validate"](namespace["model"], X, y, cv=4, return_estimator=True)
    expected = [e.predict(X[:10]) for e in serial["estimator"]]
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{rank}.npy"), expected)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("document", ["README.md", "docs/distributed.rst"])
def test_the_documented_search_script_runs_under_mpiexec_as_it_does_alone(tmp_path, document):
    """`mpiexec -n 2 python search.py` with the document's search.py prints what one rank does."""
    import contextlib
    import io

    from _docblocks import ROOT, script

    code = script(ROOT / document, "search.py").code
    result = _run_mpi(tmp_path, code, prelude="", name="search.py", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    alone = io.StringIO()
    with contextlib.redirect_stdout(alone):
        exec(compile(code, f"{document}:search.py", "exec"), {"__name__": "__main__"})
    assert result.stdout == alone.getvalue()  # printed once, by rank 0, the serial result
    assert result.stdout.count("\n") == 1


def test_one_rank_runs_in_process():
    import joblib
    from joblib import Parallel, delayed

    import mlmlearn.model_selection  # noqa: F401

    with joblib.parallel_backend("mpi"):
        assert Parallel()(delayed(abs)(-i) for i in range(5)) == [0, 1, 2, 3, 4]
