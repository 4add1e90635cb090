import pickle

import numpy as np
import pytest
from scipy.linalg import LinAlgWarning

from mlmlearn import EMLM, MLM, HuberMLM


def _data(n=200, d=4, outputs=None, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    if outputs:
        y = np.column_stack([y * (j + 1) + j for j in range(outputs)])
    return X, y


@pytest.mark.parametrize("outputs", [None, 3])
def test_emlm_equals_dense_closed_form(outputs):
    X, y = _data(outputs=outputs)
    beta = 1e-3
    model = EMLM(references=50, beta=beta).fit(X, y)
    Q = X[model.reference_indices_]
    D = np.linalg.norm(X[:, None] - Q[None], axis=2)
    K = Q.shape[0]
    W = np.linalg.solve(D.T @ D + beta / K * np.eye(K), D.T @ y)  # eq. (2.18)
    np.testing.assert_allclose(model.coef_.reshape(W.shape), W, rtol=1e-8, atol=1e-10)
    Xt = X[:7] + 0.1
    Dt = np.linalg.norm(Xt[:, None] - Q[None], axis=2)
    np.testing.assert_allclose(model.predict(Xt), Dt @ W, rtol=1e-8, atol=1e-10)
    assert model.predict(Xt).shape == (7,) + ((outputs,) if outputs else ())


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
    np.testing.assert_allclose(D @ W, D @ stacked, rtol=1e-8, atol=1e-10)


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


def test_invalid_parameters_name_the_parameter():
    X, y = _data(n=40)
    with pytest.raises(ValueError, match="'epsilon' parameter"):
        HuberMLM(epsilon=0.5).fit(X, y)
    with pytest.raises(ValueError, match="'beta' parameter"):
        EMLM(beta=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="'references' parameter"):
        MLM(references="some").fit(X, y)
    with pytest.raises(ValueError, match="multilateration='cubic'"):
        MLM(references=10, multilateration="cubic").fit(X, np.column_stack([y, y]))
