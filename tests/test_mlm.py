import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import least_squares, minimize_scalar

from mlmlearn import MLM
from mlmlearn.multilateration import (
    cubic_multilateration,
    linear_multilateration,
    nonlinear_multilateration,
)


def objective(y, t, delta):
    """Eq. (2.22)."""
    return np.sum(((y - t) ** 2 - delta**2) ** 2)


def brute_force_minimum(t, delta):
    grid = np.linspace(t.min() - 3 * delta.max() - 1, t.max() + 3 * delta.max() + 1, 4001)
    J = ((grid[:, None] - t[None]) ** 2 - delta[None] ** 2) ** 2
    start = grid[np.argmin(J.sum(axis=1))]
    step = grid[1] - grid[0]
    res = minimize_scalar(lambda y: objective(y, t, delta), bounds=(start - step, start + step),
                          method="bounded", options={"xatol": 1e-12})
    return res.x


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 12), noise=st.floats(0.0, 2.0))
def test_cubic_is_the_global_minimiser_of_2_22(seed, k, noise):
    rng = np.random.default_rng(seed)
    t = rng.normal(scale=3.0, size=k)
    truth = rng.normal(scale=3.0)
    delta = np.abs(np.abs(truth - t) + noise * rng.normal(size=k))
    y = cubic_multilateration(delta[None], t)[0]
    y_bf = brute_force_minimum(t, delta)
    # the closed form is never worse than a dense search polished by a bounded minimiser
    assert objective(y, t, delta) <= objective(y_bf, t, delta) * (1 + 1e-9) + 1e-9


def test_cubic_is_vectorised_and_exact_on_exact_distances():
    rng = np.random.default_rng(0)
    t = rng.normal(size=25)
    y = rng.normal(size=1000) * 4
    got = cubic_multilateration(np.abs(y[:, None] - t[None]), t)
    np.testing.assert_allclose(got, y, rtol=1e-10, atol=1e-10)


def test_cubic_constant_term_is_the_derivative_of_2_22():
    # the printed constant Σ(δ² - t³) would not vanish at an exact solution
    t = np.array([1.0, 2.0, 4.0])
    delta = np.abs(3.0 - t)
    K = t.size
    coeffs = [K, -3 * t.sum(), np.sum(3 * t**2 - delta**2), np.sum(delta**2 * t - t**3)]
    assert abs(np.polyval(coeffs, 3.0)) < 1e-12
    assert cubic_multilateration(delta[None], t)[0] == pytest.approx(3.0, abs=1e-12)


@pytest.mark.parametrize("dim", [1, 2, 3, 6])
@pytest.mark.parametrize("solver", [linear_multilateration, nonlinear_multilateration])
def test_vector_multilateration_recovers_points_from_exact_distances(dim, solver):
    rng = np.random.default_rng(dim)
    T = rng.normal(size=(40, dim)) * 5
    Y = rng.normal(size=(300, dim)) * 5
    delta = np.linalg.norm(Y[:, None] - T[None], axis=2)
    np.testing.assert_allclose(solver(delta, T), Y, atol=1e-8)


def test_nonlinear_multilateration_matches_per_sample_least_squares():
    rng = np.random.default_rng(1)
    T = rng.normal(size=(30, 3))
    Y = rng.normal(size=(40, 3))
    delta = np.abs(np.linalg.norm(Y[:, None] - T[None], axis=2) + 0.1 * rng.normal(size=(40, 30)))
    got = nonlinear_multilateration(delta, T, max_iter=100, tol=1e-14)
    lin = linear_multilateration(delta, T)
    for i in range(len(Y)):
        res = least_squares(lambda y, i=i: np.sum((y - T) ** 2, axis=1) - delta[i] ** 2,
                            x0=lin[i], method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
        np.testing.assert_allclose(got[i], res.x, atol=1e-7)


def test_mlm_interpolates_training_data_with_all_references():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = X[:, 0] ** 2 + np.cos(X[:, 1])
    model = MLM().fit(X, y)
    np.testing.assert_allclose(model.predict(X), y, atol=1e-6)
    Y2 = np.column_stack([y, X[:, 2]])
    np.testing.assert_allclose(MLM().fit(X, Y2).predict(X), Y2, atol=1e-5)


def test_mlm_matches_its_equations_by_hand():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(150, 2))
    y = np.tanh(X[:, 0]) - X[:, 1]
    model = MLM(references=20).fit(X, y)
    Q, t = model.references_, model.output_references_[:, 0]
    Din = np.linalg.norm(X[:, None] - Q[None], axis=2)
    Dout = np.abs(y[:, None] - t[None])
    B = np.linalg.lstsq(Din, Dout, rcond=None)[0]  # eq. (2.20)
    np.testing.assert_allclose(model.coef_, B, rtol=1e-6, atol=1e-8)
    Xt = rng.normal(size=(5, 2))
    delta = np.linalg.norm(Xt[:, None] - Q[None], axis=2) @ B  # eq. (2.21)
    for i in range(5):
        assert model.predict(Xt[i : i + 1])[0] == pytest.approx(
            brute_force_minimum(t, delta[i]), abs=1e-6)
