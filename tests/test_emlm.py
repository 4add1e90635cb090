import pickle

import numpy as np
import pytest
import sklearn
from _numerics import (
    U,
    distance_bound,
    gamma,
    oracle_distances,
    product_bound,
    ridge_solution_bound,
)
from scipy.linalg import LinAlgWarning

from mlmlearn import EMLM, MLM, HuberMLM, RandomReferences, RSMaximin
from mlmlearn._distances import euclidean_distances

WORKING_MEMORY = [1e-12, 1e-4, None]  # one row per block, a few rows, the default


def _data(n=200, d=4, outputs=None, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    if outputs:
        y = np.column_stack([y * (j + 1) + j for j in range(outputs)])
    return X, y


def _emlm_error(model, X, Y, Xt):
    """Bound on |prediction - exact| at ``Xt`` for a fitted EMLM (one run): the
    distance kernel's errors through (2.18) and through the product ``dW``.
    ``Y`` are the centred targets the model solved for (exact here: the mean is
    the same in every run compared)."""
    Q = model.references_
    D = euclidean_distances(X, Q)
    Y = Y.reshape(len(X), -1)
    eW = ridge_solution_bound(D, Y, model.beta, model.coef_, distance_bound(X, Q, D),
                              np.zeros_like(Y))
    d = euclidean_distances(Xt, Q)
    return product_bound(d, distance_bound(Xt, Q, d), model.coef_, eW) \
        + U * np.abs(model.predict(Xt).reshape(len(Xt), -1)).max(axis=1)


@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("outputs", [None, 3])
def test_emlm_equals_dense_closed_form(outputs, fit_intercept):
    """(2.18) by hand on brute-force distances; with fit_intercept=True on the
    centred targets, with the mean added back."""
    X, y = _data(outputs=outputs)
    beta = 1e-3
    model = EMLM(references=50, beta=beta, fit_intercept=fit_intercept).fit(X, y)
    Q = X[model.reference_indices_]
    D, eD = oracle_distances(X, Q)
    K = Q.shape[0]
    mean = y.mean(axis=0) if fit_intercept else np.zeros_like(y[0])
    Yc = (y - mean).reshape(len(X), -1)
    W = np.linalg.solve(D.T @ D + beta / K * np.eye(K), D.T @ Yc)  # eq. (2.18)
    # each solution is within its bound of the exact one (LU on an SPD matrix has
    # the backward error the bound takes for Cholesky)
    eW = ridge_solution_bound(D, Yc, beta, W, eD, np.zeros_like(Yc))
    eW_model = ridge_solution_bound(D, Yc, beta, model.coef_, distance_bound(X, Q, D),
                                    np.zeros_like(Yc))
    assert np.linalg.norm(model.coef_ - W) <= eW + eW_model
    np.testing.assert_array_equal(model.intercept_, np.atleast_1d(mean))
    Xt = X[:7] + 0.1
    Dt, eDt = oracle_distances(Xt, Q)
    expected = (Dt @ W + mean).reshape(7, -1)
    got = model.predict(Xt)
    assert got.shape == (7,) + ((outputs,) if outputs else ())
    bound = (product_bound(Dt, eDt, W, eW) + _emlm_error(model, X, Yc, Xt)
             + 2 * U * np.abs(expected).max(axis=1))
    assert np.all(np.abs(got.reshape(7, -1) - expected) <= bound[:, None])
    assert bound.max() < 1e-3 * np.abs(expected).max()  # far below what a wrong formula gives


def test_target_offset_needs_no_help_from_the_user():
    """The reported case: y = -310 + 0.05 sin x₀ with 50 references. With the
    default fit_intercept=True the fit is that of the centred targets (to the
    rounding of the centring); (2.18) as printed (fit_intercept=False) is far
    worse, which is why targets are centred by default."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, size=(400, 2))
    y = -310 + 0.05 * np.sin(X[:, 0])
    Xt = rng.uniform(-3, 3, size=(400, 2))
    yt = -310 + 0.05 * np.sin(Xt[:, 0])
    model = EMLM(references=50).fit(X, y)
    mean = y.mean()
    centred = EMLM(references=50, fit_intercept=False).fit(X, y - mean)
    # the same (2.18) solve on targets that differ by the rounding of the centring:
    # y - mean is computed the same way in both, so only the addition of the mean
    # and the order of operations differ
    pred, pred_c = model.predict(Xt), centred.predict(Xt) + mean
    bound = 2 * U * (np.abs(pred) + np.abs(pred_c)) + gamma(50) * (
        np.abs(euclidean_distances(Xt, model.references_)) @ np.abs(model.coef_[:, 0]))
    assert np.all(np.abs(pred - pred_c) <= bound)
    rmse = np.sqrt(np.mean((pred - yt) ** 2))
    rmse_plain = np.sqrt(np.mean((EMLM(references=50, fit_intercept=False)
                                  .fit(X, y).predict(Xt) - yt) ** 2))
    # a tenth of the signal's amplitude; (2.18) as printed misses the signal whole
    assert rmse < 0.1 * 0.05 < 100 * rmse < rmse_plain


def test_intercept_makes_predictions_equivariant_to_a_target_offset():
    X, y = _data()
    c = 1e4
    a = EMLM(references=40, beta=1e-3).fit(X, y)
    b = EMLM(references=40, beta=1e-3).fit(X, y + c)
    np.testing.assert_array_equal(a.reference_indices_, b.reference_indices_)
    Xt = X[:20] + 0.05
    # the centred targets differ by the rounding of y + c and of the two means
    Yc = y - y.mean()
    eY = 2 * U * (np.abs(y) + c) + 2 * gamma(len(y)) * (np.abs(y).mean() + c)
    Q = a.references_
    D = euclidean_distances(X, Q)
    eW = sum(ridge_solution_bound(D, Yc[:, None], 1e-3, m.coef_, np.zeros_like(D),
                                  np.broadcast_to(eY[:, None], (len(y), 1))) for m in (a, b))
    d = euclidean_distances(Xt, Q)
    bound = product_bound(d, np.zeros_like(d), a.coef_, eW) + 2 * gamma(2) * (
        np.abs(b.predict(Xt)) + gamma(len(y)) * c)
    assert np.all(np.abs(b.predict(Xt) - c - a.predict(Xt)) <= bound)


def test_predictions_do_not_depend_on_working_memory():
    """Fit and predict under one-row blocks, small blocks and the default: the
    references are the same, and predictions agree within the two runs' bounds."""
    X, y = _data(outputs=2)
    beta = 1e-3
    Xt = np.vstack([X[:30] + 0.1, X[:1]])
    runs = []
    for wm in WORKING_MEMORY:
        with sklearn.config_context(working_memory=wm or 1024):
            model = EMLM(references=40, beta=beta).fit(X, y)
            single = np.vstack([model.predict(Xt[i : i + 1]) for i in range(len(Xt))])
            runs.append((model, model.predict(Xt), single))
    Yc = y - y.mean(axis=0)
    first, p0, _ = runs[0]
    e0 = _emlm_error(first, X, Yc, Xt)
    for model, pred, single in runs:
        np.testing.assert_array_equal(model.reference_indices_, first.reference_indices_)
        bound = (e0 + _emlm_error(model, X, Yc, Xt))[:, None]
        assert np.all(np.abs(pred - p0) <= bound)
        assert np.all(np.abs(single - p0) <= bound)
        assert bound.max() < 1e-3 * np.abs(p0).max()  # far below what a wrong row gives


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # HuberMLM, 4 samples
@pytest.mark.parametrize("Estimator", [EMLM, MLM, HuberMLM])
@pytest.mark.parametrize("working_memory", WORKING_MEMORY)
def test_the_reported_one_row_prediction_near_a_reference(Estimator, working_memory):
    """The near-duplicate recheck found a row but no pair and crashed in gen_batches(0)."""
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1e4, 0.0]])
    y = np.array([0.0, 1.0, 1.0, 2.0])
    with sklearn.config_context(working_memory=working_memory or 1024):
        pred = Estimator().fit(X, y).predict([[0.5, 0.5]])
    assert pred.shape == (1,) and np.isfinite(pred[0])


def test_emlm_default_beta_is_sqrt_machine_epsilon():
    assert EMLM().beta == np.sqrt(np.finfo(np.float64).eps)


def test_singular_system_falls_back_to_least_squares_with_warning():
    from mlmlearn._linalg import solve_distance_regression

    rng = np.random.default_rng(0)
    D = rng.uniform(size=(100, 6))
    D = np.column_stack([D, D[:, :3] @ [1.0, -2.0, 0.5]])  # rank 6 of 7
    y = rng.normal(size=(100, 2))
    beta = 1e-30
    with pytest.warns(LinAlgWarning, match="beta=1e-30"):
        W = solve_distance_regression(D, y, beta)
    lam = beta / 7
    stacked = np.linalg.lstsq(np.vstack([D, np.sqrt(lam) * np.eye(7)]),
                              np.vstack([y, np.zeros((7, 2))]), rcond=None)[0]
    # the fitted values are the projection of y on the rank-6 range of D; each SVD
    # solve moves them by at most (1 + 2κ₆)·γ_{NK}·‖y‖ (Higham Thm 20.1, residual form)
    s = np.linalg.svd(D, compute_uv=False)
    bound = 2 * (1 + 2 * s[0] / s[5]) * gamma(D.size) * np.linalg.norm(y, axis=0)
    assert np.all(np.linalg.norm(D @ W - D @ stacked, axis=0) <= bound)


@pytest.mark.parametrize("Estimator", [EMLM, MLM, HuberMLM])
def test_pickle_round_trip_predicts_identically(Estimator):
    X, y = _data()
    model = Estimator(references=30).fit(X, y)
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))


@pytest.mark.parametrize("Estimator", [EMLM, MLM, HuberMLM])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_rejected(Estimator, bad):
    X, y = _data(n=40)
    Xb = X.copy()
    Xb[3, 1] = bad
    with pytest.raises(ValueError, match="X"):
        Estimator(references=10).fit(Xb, y)
    yb = y.copy()
    yb[5] = bad
    with pytest.raises(ValueError, match="y"):
        Estimator(references=10).fit(X, yb)
    model = Estimator(references=10).fit(X, y)
    with pytest.raises(ValueError, match="X"):
        model.predict(Xb)


@pytest.mark.parametrize("Estimator", [EMLM, MLM, HuberMLM])
def test_bad_shapes_and_types_are_rejected(Estimator):
    X, y = _data(n=40)
    with pytest.raises(ValueError, match="3"):
        Estimator(references=10).fit(X.reshape(40, 2, 2), y)
    with pytest.raises(ValueError, match="features"):
        Estimator(references=10).fit(X, y).predict(X[:, :3])
    with pytest.raises(ValueError, match="n_references=50 exceeds n_samples=40"):
        Estimator(references=50).fit(X, y)
    with pytest.raises((ValueError, TypeError)):
        Estimator(references=10).fit(X, np.array(["a"] * 40, dtype=object))


class _FakeAtoms:
    """Just enough of ase.Atoms to be recognised without importing ase."""

    def __init__(self, n):
        self.positions, self.numbers = np.zeros((n, 3)), np.ones(n, dtype=int)


class AtomicEnvironments:  # noqa: D101 - the class name is what is recognised
    structures = [_FakeAtoms(3)]

    def __len__(self):
        return 3


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # HuberMLM, 6 samples
@pytest.mark.parametrize("Estimator", [EMLM, MLM, HuberMLM, RSMaximin, RandomReferences])
@pytest.mark.parametrize("make", [
    lambda: AtomicEnvironments(),
    lambda: [_FakeAtoms(3), _FakeAtoms(4), _FakeAtoms(5)],
    lambda: np.array([_FakeAtoms(3), _FakeAtoms(4)], dtype=object),
    lambda: _FakeAtoms(5),
])
def test_structures_without_a_descriptor_say_so(Estimator, make):
    X = make()
    y = np.zeros(3)
    fit = (lambda m: m.fit(X, y)) if Estimator in (EMLM, MLM, HuberMLM) else (lambda m: m.fit(X))
    with pytest.raises(TypeError, match=r"descriptor.*make_pipeline\((SOAP|MBTR)"):
        fit(Estimator())
    rng = np.random.default_rng(0)
    Xa = rng.normal(size=(6, 2))
    fitted = Estimator(2).fit(Xa, rng.normal(size=6)) if Estimator in (EMLM, MLM, HuberMLM) \
        else Estimator(2).fit(Xa)
    method = fitted.predict if hasattr(fitted, "predict") else fitted.transform
    with pytest.raises(TypeError, match="descriptor"):
        method(X)


def test_real_atomic_environments_without_a_descriptor_say_so():
    pytest.importorskip("ase")
    from ase.build import molecule

    from mlmlearn.atoms import AtomicEnvironments as Real

    env = Real([molecule("CH4"), molecule("C2H6")])
    with pytest.raises(TypeError, match=r"EMLM takes descriptor rows.*not AtomicEnvironments"):
        EMLM().fit(env, np.zeros(len(env)))
    with pytest.raises(TypeError, match="RSMaximin takes descriptor rows"):
        RSMaximin(2).fit(env)


@pytest.mark.parametrize("Estimator", [EMLM, MLM, HuberMLM])
def test_verbose_shows_the_reference_selection(Estimator, capsys):
    pytest.importorskip("tqdm")
    X, y = _data(n=60)
    Estimator(references=20, verbose=1).fit(X, y)
    assert "RS-maximin" in capsys.readouterr().err
    Estimator(references=20).fit(X, y)
    assert "RS-maximin" not in capsys.readouterr().err
    # a selector object keeps its own setting
    Estimator(references=RSMaximin(20), verbose=1).fit(X, y)
    assert "RS-maximin" not in capsys.readouterr().err


def test_invalid_parameters_name_the_parameter():
    X, y = _data(n=40)
    with pytest.raises(ValueError, match="'epsilon' parameter"):
        HuberMLM(epsilon=0.5).fit(X, y)
    with pytest.raises(ValueError, match="'beta' parameter"):
        EMLM(beta=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="'fit_intercept' parameter"):
        EMLM(fit_intercept="yes").fit(X, y)
    with pytest.raises(ValueError, match="'references' parameter"):
        MLM(references="some").fit(X, y)
    with pytest.raises(ValueError, match="multilateration='cubic'"):
        MLM(references=10, multilateration="cubic").fit(X, np.column_stack([y, y]))


def test_large_cholesky_runs_on_one_blas_thread(monkeypatch):
    """From _SINGLE_THREAD_CHOLESKY unknowns on, the factorization sees one BLAS thread
    (OpenBLAS's threaded dpotrf crashes from n = 15 800 on with two threads)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from mlmlearn import _linalg

    seen = []
    real = _linalg.linalg.cho_factor

    def recording(*args, **kwargs):
        seen.append(max((p["num_threads"] for p in threadpool_info()
                         if p["user_api"] == "blas"), default=1))
        return real(*args, **kwargs)

    monkeypatch.setattr(_linalg.linalg, "cho_factor", recording)
    monkeypatch.setattr(_linalg, "_SINGLE_THREAD_CHOLESKY", 8)
    rng = np.random.default_rng(0)
    with threadpool_limits(limits=2, user_api="blas"):
        for n in (7, 8):
            B = rng.normal(size=(n, n))
            A = B @ B.T + n * np.eye(n)
            x = _linalg._cholesky_solve(A.copy(), np.ones((n, 1)))
            np.testing.assert_allclose(A @ x, 1.0, rtol=1e-12)
    assert seen == [2, 1]


@pytest.mark.slow
def test_emlm_solves_16000_references_with_two_blas_threads(tmp_path):
    """The size at which OpenBLAS's two-thread Cholesky crashed (SIGSEGV) runs to the end."""
    import os
    import subprocess
    import sys

    script = (
        "import numpy as np\n"
        "from mlmlearn._linalg import _cholesky_solve\n"
        "n = 16000\n"
        "rng = np.random.default_rng(0)\n"
        "B = rng.normal(size=(n, 64))\n"
        "A = B @ B.T + n * np.eye(n)\n"
        "x = _cholesky_solve(A, np.ones((n, 1)))\n"
        "print(x is not None)\n")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=1800)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
