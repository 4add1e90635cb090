import numpy as np
import pytest
import sklearn
from _numerics import (
    EPS,
    U,
    cubic_root_bound,
    distance_bound,
    gamma,
    lstsq_solution_bound,
    mlm_delta_error,
    oracle_distances,
    single_real_root,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import least_squares, minimize_scalar

from mlmlearn import MLM, RSMaximin
from mlmlearn._distances import euclidean_distances
from mlmlearn.multilateration import (
    cubic_multilateration,
    linear_multilateration,
    nonlinear_multilateration,
)


def objective(y, t, delta):
    """Eq. (2.22)."""
    return np.sum(((y - t) ** 2 - delta**2) ** 2)


def objective_rounding(y, t, delta):
    """γ_{K+4} of the magnitudes of the terms of (2.22) evaluated at y."""
    return gamma(t.size + 4) * np.sum(((y - t) ** 2 + delta**2) ** 2)


XATOL = 1e-12


def brute_force_minimum(t, delta):
    grid = np.linspace(t.min() - 3 * delta.max() - 1, t.max() + 3 * delta.max() + 1, 4001)
    J = ((grid[:, None] - t[None]) ** 2 - delta[None] ** 2) ** 2
    start = grid[np.argmin(J.sum(axis=1))]
    step = grid[1] - grid[0]
    res = minimize_scalar(lambda y: objective(y, t, delta), bounds=(start - step, start + step),
                          method="bounded", options={"xatol": XATOL})
    return res.x


def brute_force_accuracy(y, t, delta):
    """How far the bounded (Brent) minimiser can stop from the minimum: its final
    bracket, 4·(√eps·|y| + xatol/3), plus where J is flat to rounding,
    √(2ρ_J / J''), J'' = 4Σ(3(y - t)² - δ²)."""
    curv = abs(4 * np.sum(3 * (y - t) ** 2 - delta**2))
    return 4 * (np.sqrt(EPS) * abs(y) + XATOL / 3) + np.sqrt(
        2 * objective_rounding(y, t, delta) / curv)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 12), noise=st.floats(0.0, 2.0))
def test_cubic_is_the_global_minimiser_of_2_22(seed, k, noise):
    rng = np.random.default_rng(seed)
    t = rng.normal(scale=3.0, size=k)
    truth = rng.normal(scale=3.0)
    delta = np.abs(np.abs(truth - t) + noise * rng.normal(size=k))
    y = cubic_multilateration(delta[None], t)[0]
    y_bf = brute_force_minimum(t, delta)
    # the closed form is never worse than a dense search polished by a bounded minimiser,
    # beyond the rounding of J at both points and J''Δy²/2 for its own root's error Δy
    dy, _, _ = cubic_root_bound(delta[None], t, np.array([y]), 0.0)
    curv = abs(4 * np.sum(3 * (y - t) ** 2 - delta**2))
    assert objective(y, t, delta) <= objective(y_bf, t, delta) + objective_rounding(
        y, t, delta) + objective_rounding(y_bf, t, delta) + curv * dy[0] ** 2 / 2


def test_cubic_is_vectorised_and_exact_on_exact_distances():
    rng = np.random.default_rng(0)
    t = rng.normal(size=25)
    y = rng.normal(size=1000) * 4
    delta = np.abs(y[:, None] - t[None])
    got = cubic_multilateration(delta, t)
    bound, _, _ = cubic_root_bound(delta, t, got, U * delta)  # δ rounded once
    assert np.all(np.abs(got - y) <= bound)


def test_cubic_constant_term_is_the_derivative_of_2_22():
    # the printed constant Σ(δ² - t³) would not vanish at an exact solution
    t = np.array([1.0, 2.0, 4.0])
    delta = np.abs(3.0 - t)
    K = t.size
    coeffs = [K, -3 * t.sum(), np.sum(3 * t**2 - delta**2), np.sum(delta**2 * t - t**3)]
    assert np.polyval(coeffs, 3.0) == 0.0  # small integers: exact in float64
    got = cubic_multilateration(delta[None], t)
    bound, _, _ = cubic_root_bound(delta[None], t, got, 0.0)
    assert abs(got[0] - 3.0) <= bound[0]


def _nls_optimality(y, T, delta):
    """Distance of y to the minimiser of Σ r_k², r_k = |y - t_k|² - δ_k², per sample,
    from the gradient g = 4Σ r_k (y - t_k) (enlarged by its rounding) and the
    smallest eigenvalue of the Hessian 8Σ(y - t_k)(y - t_k)ᵀ + 4Σ r_k I."""
    dim = T.shape[1]
    diff = y[:, None, :] - T[None]
    r = np.einsum("nki,nki->nk", diff, diff) - delta**2
    rho = gamma(dim + 2) * (np.einsum("nki,nki->nk", diff, diff) + delta**2)
    g = 4 * np.einsum("nk,nki->ni", r, diff)
    dg = 4 * gamma(T.shape[0] + 2) * np.einsum("nk,nki->ni", np.abs(r) + rho, np.abs(diff))
    H = 8 * np.einsum("nki,nkj->nij", diff, diff) + 4 * r.sum(axis=1)[:, None, None] * np.eye(dim)
    lam = np.linalg.eigvalsh(H)[:, 0]
    assert np.all(lam > 0)
    return (np.linalg.norm(g, axis=1) + np.linalg.norm(dg, axis=1)) / lam


@pytest.mark.parametrize("dim", [1, 2, 3, 6])
@pytest.mark.parametrize("solver", [linear_multilateration, nonlinear_multilateration])
def test_vector_multilateration_recovers_points_from_exact_distances(dim, solver):
    rng = np.random.default_rng(dim)
    T = rng.normal(size=(40, dim)) * 5
    Y = rng.normal(size=(300, dim)) * 5
    delta, e_delta = oracle_distances(Y, T)
    got = solver(delta, T)
    # the exact-data minimiser is Y; the data's rounding moves it by at most
    # ‖J⁺‖·‖2δΔδ‖ (J_k = 2(y - t_k)ᵀ, the residuals' Jacobian), and the computed
    # point is within its own optimality distance of the data's minimiser
    assert np.all(np.linalg.norm(got - Y, axis=1)
                  <= _nls_data_bound(Y, T, delta, e_delta) + _nls_optimality(got, T, delta))


def test_nonlinear_multilateration_matches_per_sample_least_squares():
    rng = np.random.default_rng(1)
    T = rng.normal(size=(30, 3))
    Y = rng.normal(size=(40, 3))
    delta = np.abs(np.linalg.norm(Y[:, None] - T[None], axis=2) + 0.1 * rng.normal(size=(40, 30)))
    got = nonlinear_multilateration(delta, T, max_iter=100, tol=1e-14)
    lin = linear_multilateration(delta, T)
    ref = np.array([
        least_squares(lambda y, i=i: np.sum((y - T) ** 2, axis=1) - delta[i] ** 2,
                      x0=lin[i], method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15).x
        for i in range(len(Y))
    ])
    # both are minimisers of the same objective: within the sum of their distances to it
    bound = _nls_optimality(got, T, delta) + _nls_optimality(ref, T, delta)
    assert np.all(np.linalg.norm(got - ref, axis=1) <= bound)
    assert bound.max() < 1e-6  # a real test: far below the noise of 0.1 in δ


def test_mlm_interpolates_training_data_with_all_references():
    """With every sample a reference, D_in is square and invertible, so δ at the
    training inputs is D_out to the backward error of the solve (γ_{N²}‖D‖‖B‖:
    the residual of a backward-stable solve carries no condition number), and
    the outputs are those whose exact distances are D_out, to the cubic's (or
    the residuals' Jacobian's) sensitivity to that error, the kernel's rounding
    of D_out and of predict's own row blocks, and the K-term sums."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = X[:, 0] ** 2 + np.cos(X[:, 1])
    for Y in (y[:, None], np.column_stack([y, X[:, 2]])):
        model = MLM().fit(X, Y[:, 0] if Y.shape[1] == 1 else Y)
        Q, T = model.references_, model.output_references_
        Din = euclidean_distances(X, Q)
        s = np.linalg.svd(Din, compute_uv=False)
        assert s[-1] > s[0] * len(X) * EPS  # no singular value truncated by gelsd
        Dout = euclidean_distances(Y, T)
        residual = np.abs(Din @ model.coef_ - Dout)
        assert np.all(residual <= 2 * gamma(len(X) ** 2) * np.linalg.norm(Din)
                      * np.linalg.norm(model.coef_, axis=0))
        delta = Din @ model.coef_
        e_delta = (residual + distance_bound(Y, T, Dout)
                   + 2 * distance_bound(X, Q, Din) @ np.abs(model.coef_)
                   + 2 * gamma(len(X)) * np.abs(Din) @ np.abs(model.coef_))
        got = model.predict(X).reshape(Y.shape)
        if Y.shape[1] == 1:
            bound, _, _ = cubic_root_bound(delta, T[:, 0], got[:, 0], e_delta)
            assert np.all(np.abs(got[:, 0] - y) <= bound)
        else:
            assert np.all(np.linalg.norm(got - Y, axis=1)
                          <= _nls_data_bound(Y, T, delta, e_delta)
                          + _nls_optimality(got, T, delta))


def _nls_data_bound(Y, T, delta, e_delta):
    """‖J⁺‖·‖2δΔδ‖: how far errors Δδ move the minimiser of Σ(|y - t_k|² - δ_k²)²
    from Y (J_k = 2(y - t_k)ᵀ, the Jacobian of the residuals at Y)."""
    Jac = 2 * (Y[:, None, :] - T[None])
    smin = np.linalg.svd(Jac, compute_uv=False)[:, -1]
    return np.linalg.norm(2 * np.abs(delta) * e_delta, axis=1) / smin


def distance_bound_of(X, Q):
    return distance_bound(X, Q, euclidean_distances(X, Q))


def test_mlm_matches_its_equations_by_hand():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(150, 2))
    y = np.tanh(X[:, 0]) - X[:, 1]
    model = MLM(references=20).fit(X, y)
    Q, t = model.references_, model.output_references_[:, 0]
    Din, eDin = oracle_distances(X, Q)
    Dout = np.abs(y[:, None] - t[None])
    B = np.linalg.lstsq(Din, Dout, rcond=None)[0]  # eq. (2.20)
    eB_hand = lstsq_solution_bound(Din, Dout, B, eDin, U * Dout)
    eB_model = lstsq_solution_bound(Din, Dout, model.coef_, distance_bound_of(X, Q),
                                    np.zeros_like(Dout) + U * Dout)
    assert np.all(np.linalg.norm(model.coef_ - B, axis=0) <= eB_hand + eB_model)
    Xt = rng.normal(size=(5, 2))
    Dt, eDt = oracle_distances(Xt, Q)
    delta = Dt @ B  # eq. (2.21)
    e_delta = (np.linalg.norm(Dt, axis=1)[:, None] * (eB_hand + eB_model)[None]
               + (eDt + distance_bound_of(Xt, Q)) @ np.abs(B) + 2 * gamma(20) * np.abs(Dt)
               @ np.abs(B))
    got = model.predict(Xt)
    bound, p, q = cubic_root_bound(delta, t, got, e_delta)
    for i in range(5):
        y_bf = brute_force_minimum(t, delta[i])
        assert abs(got[i] - y_bf) <= bound[i] + brute_force_accuracy(y_bf, t, delta[i])


@pytest.mark.parametrize("working_memory", [1e-12, 1e-4, None])
def test_the_reported_fit_under_a_small_working_memory(working_memory):
    """MLM.fit crashed in gen_batches(0) when a block of output distances held a row
    near a reference only relative to the largest output reference (here 1e4), not
    to its own pair; one-row blocks made that common."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, 2))
    y = rng.uniform(size=40)
    y[RSMaximin(10).fit(X).indices_[0]] = 1e4  # a large output reference
    with sklearn.config_context(working_memory=working_memory or 1024):
        model = MLM(references=10).fit(X, y)
    Dout = euclidean_distances(y[:, None], model.output_references_)
    ref, e = oracle_distances(y[:, None], model.output_references_)
    assert np.all(np.abs(Dout - ref) <= distance_bound(y[:, None], model.output_references_,
                                                       Dout) + e)
    assert np.all(np.isfinite(model.predict(X)))


@pytest.mark.parametrize("multilateration", ["cubic", "linear", "nonlinear"])
def test_fit_and_predict_do_not_depend_on_working_memory(multilateration):
    """The reported crash (MLM.fit under a small working_memory) and the kind:
    one-row blocks, small blocks and the default give the same references and
    predictions within the two runs' bounds (δ from the least-squares bound, the
    cubic's sensitivity; the vector stages' from the residuals' Jacobian)."""
    rng = np.random.default_rng(4)
    X = rng.uniform(-2, 2, size=(120, 2))
    y = np.sin(X[:, 0]) + 0.3 * X[:, 1]
    Xt = np.vstack([rng.uniform(-1.5, 1.5, size=(20, 2)), X[:1]])
    runs = []
    for wm in (1e-12, 1e-4, None):
        with sklearn.config_context(working_memory=wm or 1024):
            model = MLM(references=12, multilateration=multilateration).fit(X, y)
            runs.append((model, model.predict(Xt), mlm_delta_error(model, X, y, Xt)))
    first, p0, de0 = runs[0]
    t = first.output_references_[:, 0]
    T = t[:, None]
    for model, pred, de in runs:
        np.testing.assert_array_equal(model.reference_indices_, first.reference_indices_)
        delta = euclidean_distances(Xt, model.references_) @ model.coef_
        e = de0 + de
        if multilateration == "cubic":
            b, p, q = cubic_root_bound(delta, t, pred, e)
            assert np.all(single_real_root(p, q))  # the premise of the bound
            bound = 2 * b
        elif multilateration == "linear":
            # y = t̄ + s·(δ² - s²)/(-2|s|²) up to its constant: Δy ≤ ‖2δΔδ‖/(2‖s‖), and
            # the K-term sums of both runs
            s = t - t.mean()
            bound = (np.linalg.norm(2 * np.abs(delta) * e, axis=1) / (2 * np.linalg.norm(s))
                     + 2 * gamma(t.size + 4) * ((delta**2 + s**2) @ np.abs(s)) / (s @ s)
                     + 2 * U * np.abs(pred))
        else:
            bound = (_nls_data_bound(pred[:, None], T, delta, e)
                     + _nls_optimality(pred[:, None], T, delta)
                     + _nls_optimality(p0[:, None], T, delta))
        assert np.all(np.abs(pred - p0) <= bound)
        assert bound.max() < 1e-3 * y.std()  # a real test: far below a wrong row's error
