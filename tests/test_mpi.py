"""The "mpi" joblib backend under a real ``mpiexec -n 2``: serial results, errors surface."""

import os
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


def _run_mpi(tmp_path, body, n=2, timeout=240):
    script = tmp_path / "job.py"
    script.write_text(SEARCH + textwrap.dedent(body))
    import mlmlearn

    # the ranks import the mlmlearn under test, installed or not
    path = [str(Path(mlmlearn.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
    }
    return subprocess.run(
        [str(MPIEXEC), "-n", str(n), sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env=env,
    )


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


def test_one_rank_runs_in_process():
    import joblib
    from joblib import Parallel, delayed

    import mlmlearn.model_selection  # noqa: F401

    with joblib.parallel_backend("mpi"):
        assert Parallel()(delayed(abs)(-i) for i in range(5)) == [0, 1, 2, 3, 4]
