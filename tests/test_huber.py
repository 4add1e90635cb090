"""The batched Huber solver (mlmlearn._huber): optimality, invariance, warnings."""

import warnings

import numpy as np
import pytest
from _numerics import EPS, gamma, kkt
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import HuberRegressor
from sklearn.linear_model._huber import _huber_loss_and_gradient

from mlmlearn._huber import huber_regression, optimal_scale


def test_an_exact_line_far_from_the_origin():
    """The reported input: y = 0.002 (t - 1e8) + 5, t from 1e8 to 1e8 + 2e4 (the slope
    was 3.6e-7, with a warning advising more iterations, which did not help)."""
    t = np.linspace(1e8, 1e8 + 2e4, 24)
    y = 0.002 * (t - 1e8) + 5.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # an exact fit is converged
        coef, intercept, scale, _ = huber_regression(t[:, None], y[:, None])
    pred = t * coef[0, 0] + intercept[0]
    # an exact fit is exact to rounding: at most eight roundings (residual, the
    # back-transform of coefficient and intercept, this evaluation), each eps times
    # one of the magnitudes involved
    bound = 8 * EPS * (np.abs(y) + np.abs(t * coef[0, 0]) + abs(intercept[0]) + y.mean())
    assert np.all(np.abs(pred - y) <= bound)
    assert abs(coef[0, 0] - 0.002) <= 2 * bound.max() / (t[-1] - t[0])
    assert scale[0] == 10 * EPS  # σ at HuberRegressor's lower bound: residuals are 0


def _grid_problem(seed, n=80, m=3):
    """Features on a grid of 1/64 below 10 in magnitude: offsets up to 1e8 and
    power-of-two scales transform them exactly, so every transformed problem is
    the same problem, and only the solver's rounding can tell them apart."""
    rng = np.random.default_rng(seed)
    X = rng.integers(-640, 640, size=(n, m)) / 64.0
    y = X @ rng.normal(size=m) + 1.0 + 0.3 * rng.standard_t(1.5, size=n)
    return X, y


@pytest.mark.parametrize("alpha", [0.0, 1e-3])
@pytest.mark.parametrize("offset", [0.0, 1.0, 1e4, 1e8])
@pytest.mark.parametrize("scale", [2.0**-10, 1.0, 2.0**20])  # ≈ 1e-3 … 1e6
def test_the_fitted_line_is_invariant_to_feature_offsets_and_scales(offset, scale, alpha):
    X, y = _grid_problem(0)
    eps = 1.35
    c0, i0, s0, _ = huber_regression(X, y, epsilon=eps, alpha=alpha, tol=1e-9)
    Xt = (X + offset * np.array([1.0, -1.0, 0.5])) * scale  # exact in float64
    # α|w|² is the same penalty on the rescaled coefficients w/scale when α is scaled by scale²
    ct, it, st, _ = huber_regression(Xt, y, epsilon=eps, alpha=alpha * scale**2, tol=1e-9)
    # the same line and scale, to within how far each fit can be from the optimum
    k0 = kkt(X, y, c0[:, 0], i0[0], s0[0], eps, alpha)
    kt = kkt(Xt, y, ct[:, 0], it[0], st[0], eps, alpha * scale**2)
    pred0, predt = X @ c0[:, 0] + i0[0], Xt @ ct[:, 0] + it[0]
    rounding = gamma(4) * (np.abs(X) @ np.abs(c0[:, 0]) + abs(i0[0])
                           + np.abs(Xt) @ np.abs(ct[:, 0]) + abs(it[0]))
    bound = np.linalg.norm(k0.A, axis=1) * (k0.dist + kt.dist) + rounding
    assert np.all(np.abs(predt - pred0) <= bound)
    assert abs(st[0] - s0[0]) <= k0.dist + kt.dist
    # the bound is a real test: far below the spread of the targets
    assert bound.max() < 1e-4 * y.std()


@pytest.mark.parametrize("seed", range(4))
def test_objective_equal_or_lower_than_huber_regressors(seed):
    """Small problems where HuberRegressor (L-BFGS-B) converges: ours is never above
    its objective by more than our fit's distance to the optimum allows, plus the
    rounding of both objectives."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(120, 4)) * rng.uniform(0.1, 10, size=4) + rng.uniform(-5, 5, size=4)
    Y = X @ rng.normal(size=(4, 3)) + 2.0 + 0.3 * rng.standard_t(1.5, size=(120, 3))
    eps, alpha = 1.35, 1e-3
    coef, intercept, scale, _ = huber_regression(X, Y, epsilon=eps, alpha=alpha, tol=1e-10)
    for k in range(Y.shape[1]):
        ours = kkt(X, Y[:, k], coef[:, k], intercept[k], scale[k], eps, alpha)
        ref = HuberRegressor(epsilon=eps, alpha=alpha, tol=1e-12, max_iter=10000).fit(X, Y[:, k])
        theirs = kkt(X, Y[:, k], ref.coef_, ref.intercept_, ref.scale_, eps, alpha)
        assert ours.f <= theirs.f + ours.excess + ours.rho_f + theirs.rho_f
        # and both are the same fit, as far as each is from the optimum
        pred = X @ coef[:, k] + intercept[k]
        pred_ref = ref.predict(X)
        assert np.all(np.abs(pred - pred_ref)
                      <= np.linalg.norm(ours.A, axis=1) * (ours.dist + theirs.dist)
                      + gamma(6) * (np.abs(X) @ (np.abs(coef[:, k]) + np.abs(ref.coef_))
                                    + abs(intercept[k]) + abs(ref.intercept_)))


def test_optimal_scale_minimises_the_objective_in_sigma():
    rng = np.random.default_rng(2)
    R = rng.standard_t(2, size=(300, 5))
    eps = 1.35

    def f(s, r):
        a = np.abs(r)
        inl = a <= eps * s
        return len(r) * s + (r[inl] ** 2).sum() / s + (2 * eps * a[~inl] - eps**2 * s).sum()

    def rounding(s, r):  # γ_{n+3} of the magnitudes of the terms
        a = np.abs(r)
        inl = a <= eps * s
        return gamma(len(r) + 3) * (len(r) * s + (r[inl] ** 2).sum() / s
                                    + (2 * eps * a[~inl] + eps**2 * s).sum())

    sigma = optimal_scale(R, eps)
    for k in range(5):
        for s in sigma[k] * np.array([0.98, 0.999, 1.001, 1.02]):
            assert f(sigma[k], R[:, k]) <= f(s, R[:, k]) + rounding(sigma[k], R[:, k]) + rounding(
                s, R[:, k])


def test_the_warning_advice_is_accurate():
    """Running out of iterations warns and says to increase max_iter; doing so helps."""
    X, y = _grid_problem(1)
    with pytest.warns(ConvergenceWarning, match="increase max_iter"):
        huber_regression(X, y, max_iter=1, tol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        huber_regression(X, y, max_iter=100, tol=1e-8)


@pytest.mark.parametrize("offset", [0.0, 1e8])
def test_a_constant_feature_gets_no_weight(offset):
    """A constant column says nothing an intercept does not: its coefficient is
    exactly 0, also when its centred values are rounding noise (1e8 plus steps of
    1e-9, far below the n·eps·1e8 error of its mean), and the rest of the fit is
    the fit without it."""
    X, y = _grid_problem(2)
    const = offset + 1e-9 * np.arange(len(y)) * (offset != 0)
    coef, intercept, scale, _ = huber_regression(np.column_stack([X, const]), y, alpha=1e-3,
                                                 tol=1e-9)
    assert coef[-1, 0] == 0.0
    ref, ref_icpt, ref_scale, _ = huber_regression(X, y, alpha=1e-3, tol=1e-9)
    ours = kkt(X, y, coef[:-1, 0], intercept[0], scale[0], 1.35, 1e-3)
    theirs = kkt(X, y, ref[:, 0], ref_icpt[0], ref_scale[0], 1.35, 1e-3)
    pred, pred_ref = X @ coef[:-1, 0] + intercept[0], X @ ref[:, 0] + ref_icpt[0]
    assert np.all(np.abs(pred - pred_ref) <= np.linalg.norm(ours.A, axis=1)
                  * (ours.dist + theirs.dist) + gamma(6) * (np.abs(pred) + np.abs(pred_ref)))


def test_fit_intercept_false_fits_through_the_origin():
    X, y = _grid_problem(3)
    coef, intercept, scale, _ = huber_regression(X, y, fit_intercept=False, alpha=0.0,
                                                 tol=1e-10)
    assert np.all(intercept == 0.0)
    ref = HuberRegressor(epsilon=1.35, alpha=0.0, fit_intercept=False, tol=1e-12,
                         max_iter=10000).fit(X, y)
    w = np.r_[coef[:, 0], scale[0]]
    w_ref = np.r_[ref.coef_, ref.scale_]
    f = _huber_loss_and_gradient(w, X, y, 1.35, 0.0, np.ones(len(y)))[0]
    f_ref = _huber_loss_and_gradient(w_ref, X, y, 1.35, 0.0, np.ones(len(y)))[0]
    assert f <= f_ref * (1 + gamma(len(y) + X.shape[1] + 4)) + 1e-300


@pytest.mark.parametrize("bad", ["shape", "rows", "nan"])
def test_bad_inputs_name_the_argument(bad):
    X, y = _grid_problem(0)
    if bad == "shape":
        with pytest.raises(ValueError, match="X must be"):
            huber_regression(X[:, 0], y)
    elif bad == "rows":
        with pytest.raises(ValueError, match=r"X \(80, 3\), Y \(79, 1\)"):
            huber_regression(X, y[:-1])
    else:
        y = y.copy()
        y[5] = np.nan
        with pytest.raises(ValueError, match="Y must be finite; row 5"):
            huber_regression(X, y)


def test_small_designs_are_solved_on_one_blas_thread(monkeypatch):
    """Below _ONE_THREAD_SIZE entries the solver limits BLAS to one thread (on two busy
    cores a 200×100 distance design took 0.67 s on one thread, 27 s on two); larger
    designs keep the process's setting."""
    from threadpoolctl import threadpool_info

    from mlmlearn import _huber

    seen = []

    def record(X, Y, *args):
        seen.append(max(pool["num_threads"] for pool in threadpool_info()))
        return "solved"

    monkeypatch.setattr(_huber, "_huber_regression", record)
    outside = max(pool["num_threads"] for pool in threadpool_info())
    X, y = np.ones((50, 3)), np.ones(50)
    assert huber_regression(X, y) == "solved"
    monkeypatch.setattr(_huber, "_ONE_THREAD_SIZE", X.size - 1)
    huber_regression(X, y)
    assert seen == [1, outside]
    assert max(pool["num_threads"] for pool in threadpool_info()) == outside  # restored


def _distance_problem(n, k, seed=0, outliers=0.1):
    """An MLM's distance regression: D_in (n × k) and D_out of noisy 1-D targets with
    a fraction of gross outliers."""
    from mlmlearn._distances import euclidean_distances

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=n)
    bad = rng.choice(n, int(outliers * n), replace=False)
    y[bad] += rng.choice([-4.0, 4.0], size=bad.size)
    ref = rng.choice(n, k, replace=False)
    return euclidean_distances(X, X[ref]), np.abs(y[:, None] - y[ref][None])


def _objectives(X, Y, coef, intercept, scale, eps, alpha):
    return np.array([_huber_loss_and_gradient(np.r_[coef[:, k], intercept[k], scale[k]], X,
                                              Y[:, k], eps, alpha, np.ones(len(X)))[0]
                     for k in range(Y.shape[1])])


@pytest.mark.parametrize("n, k", [(60, 30), (120, 60)])
def test_dense_newton_and_conjugate_gradients_reach_the_same_optimum(n, k):
    """The per-column joint Newton step (small designs) against the batched CG
    solver it replaced there (the oracle), on distance designs with outliers: every
    column's objective is within both fits' distance to the optimum (kkt) plus
    their rounding."""
    from mlmlearn._huber import _huber_regression

    D, Y = _distance_problem(n, k)
    eps, alpha = 1.35, 1e-3
    fits = [_huber_regression(D, Y, eps, alpha, True, 2000, 1e-9, 0, dense=dense)
            for dense in (True, False)]
    for j in range(Y.shape[1]):
        a, b = (kkt(D, Y[:, j], f[0][:, j], f[1][j], f[2][j], eps, alpha) for f in fits)
        assert abs(a.f - b.f) <= a.excess + b.excess + a.rho_f + b.rho_f


def test_the_joint_newton_step_needs_few_iterations():
    """On a distance design (K = N/2) the alternating θ-step/σ-update needed 80–150
    iterations; the joint step in (θ, σ) converges at a Newton rate."""
    from mlmlearn._huber import _huber_regression

    D, Y = _distance_problem(200, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        n_iter = _huber_regression(D, Y, 1.35, 1e-4, True, 100, 1e-5, 0, dense=True)[3]
    assert n_iter <= 40


@pytest.mark.parametrize("n, k", [(40, 20), (80, 70), (100, 90)])
def test_objective_not_above_huber_regressors_at_the_same_settings(n, k):
    """At the defaults of both (HuberRegressor's L-BFGS-B at max_iter=100), on distance
    designs with outliers up to K close to N, where HuberRegressor stops early: our
    objective is never above its own, beyond the rounding of both sums (γ_{n+P+4})."""
    D, Y = _distance_problem(n, k, seed=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        coef, intercept, scale, _ = huber_regression(D, Y)
        theirs = np.empty(Y.shape[1])
        for j in range(Y.shape[1]):
            h = HuberRegressor().fit(D, Y[:, j])
            theirs[j] = _objectives(D, Y[:, [j]], h.coef_[:, None], [h.intercept_],
                                    [h.scale_], 1.35, 1e-4)[0]
    ours = _objectives(D, Y, coef, intercept, scale, 1.35, 1e-4)
    rounding = gamma(n + k + 4) * (np.abs(ours) + np.abs(theirs))
    assert np.all(ours <= theirs + rounding)


def test_gradient_vanishes_to_tol_at_the_solution():
    """KKT: at convergence every component of the gradient in standardised coordinates
    (centred unit-RMS features, intercept, σ) is at most tol plus its rounding."""
    D, Y = _distance_problem(120, 40, seed=3)
    eps, alpha, tol = 1.35, 1e-4, 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        coef, intercept, scale, _ = huber_regression(D, Y, tol=tol)
    n = len(D)
    mean = D.mean(axis=0)
    rms = np.sqrt(np.mean((D - mean) ** 2, axis=0))
    A = np.column_stack([(D - mean) / rms, np.ones(n)])
    for j in range(Y.shape[1]):
        r = Y[:, j] - D @ coef[:, j] - intercept[j]
        inl = np.abs(r) <= eps * scale[j]
        psi = np.where(inl, 2 * r / scale[j], 2 * eps * np.sign(r))
        theta = np.r_[coef[:, j] * rms, 0.0]
        g = np.r_[-(A.T @ psi) + 2 * alpha * np.r_[1 / rms**2, 0.0] * theta,
                  n - (~inl).sum() * eps**2 - (r[inl] ** 2).sum() / scale[j] ** 2]
        dr = gamma(D.shape[1] + 2) * (np.abs(Y[:, j]) + np.abs(D) @ np.abs(coef[:, j])
                                      + abs(intercept[j]))
        dg = np.r_[np.abs(A).T @ np.where(inl, 2 * dr / scale[j], 0.0)
                   + gamma(n) * np.abs(A).T @ np.abs(psi),
                   2 * gamma(n) * n + 2 * (np.abs(r[inl]) * dr[inl]).sum() / scale[j] ** 2]
        assert np.all(np.abs(g) <= tol + dg)


def test_the_readme_problem_converges_at_defaults():
    """HuberMLM(references=RSMaximin(100)) on the README's 1 500 training samples: no
    ConvergenceWarning at the default max_iter and tol."""
    from sklearn.model_selection import train_test_split

    from mlmlearn import HuberMLM, RSMaximin

    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, size=(2000, 2))
    y = np.sin(X[:, 0]) * np.cos(X[:, 1]) + 0.05 * rng.normal(size=2000)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = HuberMLM(references=RSMaximin(100)).fit(X_train, y_train)
    assert model.score(X_test, y_test) > 0.95


def _lad(D, Y, eps=1.35, alpha=1e-4):
    """The σ-collapse pass on the standardised problem, as _huber_regression sets it up."""
    from mlmlearn._huber import _CollapsedLAD, _HuberProblem, _standardise

    Z, _, x_scale = _standardise(D, True)
    A = np.column_stack([Z, np.ones(len(D))])
    pen = np.r_[1.0 / x_scale**2, 0.0]
    return _CollapsedLAD(A, pen, eps, alpha, True), _HuberProblem(A, eps, alpha, pen), \
        Y - Y.mean(axis=0)


@pytest.mark.parametrize("n, k", [(60, 50), (80, 70)])
def test_the_collapsed_pass_is_certified_and_not_above_either_solver(n, k):
    """Distance designs with K close to N: every column is solved at σ's lower bound,
    without a ConvergenceWarning, to an objective not above HuberRegressor's at the
    same (default) settings beyond the rounding of both sums, nor above the Newton
    path's beyond the certified relative gap tol (f ≤ f* + tol·f ≤ f_newton + tol·f)."""
    from mlmlearn._huber import _SIGMA_MIN, _huber_regression

    D, Y = _distance_problem(n, k, seed=n + 1)
    eps, alpha, tol = 1.35, 1e-4, 1e-5
    info = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        coef, intercept, scale, _ = _huber_regression(D, Y, eps, alpha, True, 100, tol, 0,
                                                      info=info)
    assert info["collapsed"] == Y.shape[1]
    assert np.all(scale == _SIGMA_MIN)
    ours = _objectives(D, Y, coef, intercept, scale, eps, alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        newton = _objectives(D, Y, *_huber_regression(D, Y, eps, alpha, True, 100, tol, 0,
                                                      collapsed=False)[:3], eps, alpha)
        theirs = np.array([_objectives(D, Y[:, [j]], h.coef_[:, None], [h.intercept_],
                                       [h.scale_], eps, alpha)[0]
                           for j, h in ((j, HuberRegressor().fit(D, Y[:, j]))
                                        for j in range(Y.shape[1]))])
    rounding = gamma(n + k + 4) * (np.abs(ours) + np.abs(theirs) + np.abs(newton))
    assert np.all(ours <= theirs + rounding)
    assert np.all(ours <= newton + tol * ours + rounding)


@pytest.mark.parametrize("case", ["few references", "large alpha"])
def test_a_scale_that_does_not_collapse_takes_the_newton_path(case):
    """Designs that pass the P ≥ n(1 - 1/ε²) test but whose σ stays away from 0 (too
    few references for the LAD vertex to interpolate n(1 - 1/ε²) samples, or a
    penalty that keeps the fit from interpolating): no column keeps the pass's
    answer, and the result is the Newton path's, bit for bit."""
    from mlmlearn._huber import _collapse_possible, _huber_regression

    D, Y = _distance_problem(80, 40, seed=4) if case == "few references" else \
        _distance_problem(80, 70, seed=5)
    alpha = 1e-4 if case == "few references" else 10.0
    assert _collapse_possible(D.shape[0], D.shape[1] + 1, 1.35)
    info = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = _huber_regression(D, Y, 1.35, alpha, True, 100, 1e-5, 0, info=info)
        ref = _huber_regression(D, Y, 1.35, alpha, True, 100, 1e-5, 0, collapsed=False)
    assert info["collapsed"] == 0
    for a, b in zip(fit, ref, strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.all(fit[2] > 1e3 * 10 * EPS)  # σ well above its lower bound


def test_the_certificate_is_a_lower_bound_and_rejects_perturbed_fits():
    """D(g) ≤ f(θ, σ) for any θ, any σ ≥ 10·eps and any g in [-2ε, 2ε] with 1ᵀg = 0
    and S(g) ≥ 0 (Fenchel–Young on the perspective of the Huber loss); at the
    certified fit the gap is within tol·f, and moving the fit (θ) or the certificate
    (g: the signs of a few non-interpolated samples flipped) breaks it."""
    from mlmlearn._huber import _SIGMA_MIN

    D, Y = _distance_problem(60, 50, seed=7)
    lad, problem, Yc = _lad(D, Y)
    theta, accepted, _ = lad.solve(problem, Yc, 1e-5, 1000)
    assert accepted.all()
    k = Yc.shape[1]
    smin = np.full(k, _SIGMA_MIN)
    f = problem.loss(theta, smin, Yc)
    _, G, found = lad.polish(lad.basis(), lad.A @ theta - Yc, Yc)
    assert found.all()
    G = lad.dual(G)
    D0, S, size = lad.lower_bound(G, Yc)
    rounding = gamma(D.shape[0] + D.shape[1] + 5) * (f + size)
    assert np.all(S >= 0) and np.all(f - D0 <= 1e-5 * f + rounding)
    rng = np.random.default_rng(0)
    for step in [0.0, 1e-9, 1e-6, 1e-3, 1.0, 10.0]:
        # sound everywhere, and sharpest near the optimum: θ at and around the fit, σ
        # from its lower bound up, g between the certificate and a random feasible
        # point (|g| ≤ 2 keeps S ≥ 0; the box, 1ᵀg = 0 and S ≥ 0 are convex)
        th = theta + rng.normal(scale=step, size=theta.shape)
        sg = np.where(step < 1e-3, _SIGMA_MIN, _SIGMA_MIN * 10.0 ** rng.uniform(0, 16, size=k))
        t = 0.0 if step < 1e-3 else rng.uniform()
        g = (1 - t) * G + t * lad.dual(rng.uniform(-2.0, 2.0, size=Yc.shape))
        Dg, Sg, sz = lad.lower_bound(g, Yc)
        fg = problem.loss(th, sg, Yc)
        assert np.all(Sg >= 0)
        assert np.all(Dg <= fg + gamma(D.shape[0] + D.shape[1] + 5) * (fg + sz))
    # a perturbed fit: the intercept moved by a hundredth of the targets' spread
    th = theta.copy()
    th[-1] += 0.01 * Yc.std(axis=0)
    fp = problem.loss(th, smin, Yc)
    assert np.all(fp - D0 > 1e-5 * fp)
    # a perturbed certificate: three non-interpolated samples with the wrong sign
    Gp = G.copy()
    for j in range(k):
        outside = np.flatnonzero(np.abs(G[:, j]) == 2 * 1.35)[:3]
        Gp[outside, j] *= -1
    Dp = lad.lower_bound(lad.dual(Gp), Yc)[0]
    assert np.all(f - Dp > 1e-5 * f)
