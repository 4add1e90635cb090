import warnings

import numpy as np
import pytest
from _numerics import (
    U,
    cubic_root_bound,
    distance_bound,
    gamma,
    kkt,
    mlm_delta_error,
    single_real_root,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import HuberRegressor

from mlmlearn import MLM, HuberMLM
from mlmlearn._distances import euclidean_distances


def _noisy(seed=1, n=250):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, np.sin(X[:, 0]) + 0.2 * rng.standard_t(1.5, size=n)


def test_huber_mlm_solves_huber_regressors_objective_on_distances():
    """On distance designs HuberRegressor stops early (L-BFGS-B's ftol); ours is never
    above its objective by more than our fit's distance to the optimum allows
    (f - f* ≤ ‖g‖·‖θ - θ*‖, from our gradient and curvature) plus the rounding of
    both objectives."""
    X, y = _noisy()
    eps, alpha = 1.2, 1e-3
    model = HuberMLM(references=12, epsilon=eps, alpha=alpha, tol=1e-6).fit(X, y)
    Din = euclidean_distances(X, model.references_)  # the matrices the model was fitted on
    Dout = euclidean_distances(y[:, None], model.output_references_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # HuberRegressor's
        for k in range(model.n_references_):
            ours = kkt(Din, Dout[:, k], model.coef_[:, k], model.intercept_[k],
                       model.scale_[k], eps, alpha)
            ref = HuberRegressor(epsilon=eps, alpha=alpha, tol=1e-10, max_iter=5000).fit(
                Din, Dout[:, k])
            theirs = kkt(Din, Dout[:, k], ref.coef_, ref.intercept_, ref.scale_, eps, alpha)
            assert ours.f <= theirs.f + ours.excess + ours.rho_f + theirs.rho_f


def _delta_error_huber(model, Xt, eY):
    """The same for HuberMLM: each column's distance to its optimum (kkt) plus its
    first-order response to target errors, ‖Δθ‖ ≤ (2/σ)‖A_in‖‖Δy_in‖ / λ_min."""
    Din = euclidean_distances(model._train_X, model.references_)
    Dout = euclidean_distances(model._train_Y, model.output_references_)
    e_out = eY(Dout)
    d = euclidean_distances(Xt, model.references_)
    K = d.shape[1]
    err = np.empty((len(Xt), K))
    for k in range(K):
        o = kkt(Din, Dout[:, k], model.coef_[:, k], model.intercept_[k], model.scale_[k],
                model.epsilon, model.alpha)
        a_in = o.A[o.inliers]
        sens = 2 / o.sigma * np.linalg.norm(a_in, 2) * np.linalg.norm(e_out[o.inliers, k]) \
            / o.lam_min
        at = np.column_stack([(d - o.mean) / o.rms, np.ones(len(d))])
        err[:, k] = np.linalg.norm(at, axis=1) * (o.dist + sens) + gamma(K + 1) * (
            np.abs(d) @ np.abs(model.coef_[:, k]) + abs(model.intercept_[k]))
    return err


@pytest.mark.parametrize("Estimator", [MLM, HuberMLM])
def test_a_target_offset_passes_through(Estimator):
    """Output distances do not see a constant added to the targets, so MLM and
    HuberMLM need no intercept of their own: fitting y + 1024 predicts 1024 more,
    within the rounding the offset causes (in the output distances, through the
    fit of B and the cubic) and each fit's own distance to its optimum."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, size=(150, 2))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1]
    offset = 1024.0
    Xt = rng.uniform(-2.5, 2.5, size=(30, 2))
    preds, bounds = [], []
    for shift in (0.0, offset):
        model = Estimator(references=15).fit(X, y + shift)
        model._train_X, model._train_Y = X, (y + shift)[:, None]
        t = model.output_references_[:, 0]

        def eY(Dout, t=t, shift=shift):  # kernel error, and y + shift rounded (y and t)
            yy = (y + shift)[:, None]
            return distance_bound(yy, t[:, None], Dout) + 2 * U * (np.abs(yy) + np.abs(t))

        if Estimator is MLM:  # D_in is the same in both fits: only D_out's errors count
            de = mlm_delta_error(model, X, y + shift, Xt, eY=eY, eD=np.zeros_like)
        else:
            de = _delta_error_huber(model, Xt, eY)
        delta = euclidean_distances(Xt, model.references_) @ model.coef_ + model.intercept_
        pred = model.predict(Xt)
        b, p, q = cubic_root_bound(delta, t, pred, de)
        assert np.all(single_real_root(p, q))  # the premise of the bound
        preds.append(pred - shift)
        bounds.append(b + U * np.abs(pred))  # and the subtraction of the shift
    assert np.all(np.abs(preds[1] - preds[0]) <= bounds[0] + bounds[1])
    assert np.max(bounds[0] + bounds[1]) < 1e-3 * y.std()  # a real test, not a vacuous one


def test_huber_mlm_resists_outliers_where_mlm_does_not():
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, size=(400, 1))
    clean = np.sin(X[:, 0])
    y = clean.copy()
    y[rng.choice(400, 40, replace=False)] += rng.choice([-6, 6], size=40)
    # epsilon=1 makes (2.27) least absolute deviations, whose kink minimum the
    # Newton solver does not reach; it says so, and the fit still resists outliers
    with pytest.warns(ConvergenceWarning, match="least absolute deviations"):
        robust = HuberMLM(references=25, epsilon=1.0).fit(X, y)
    plain = MLM(references=25).fit(X, y)
    err_r = np.median(np.abs(robust.predict(X) - clean))
    err_p = np.median(np.abs(plain.predict(X) - clean))
    assert err_r < 0.5 * err_p


def test_not_converging_warns_with_advice_that_helps():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = X[:, 0] + 0.1 * X[:, 1] ** 3
    with pytest.warns(ConvergenceWarning, match="max_iter=1 .*increase max_iter"):
        HuberMLM(references=10, max_iter=1, tol=1e-12).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        HuberMLM(references=10, max_iter=100, tol=1e-12).fit(X, y)


def test_thesis_regime_converges_at_defaults():
    """K close to N (70 references of 80 samples): σ collapses to its lower bound for
    every column of B and the fit is certified there (duality gap within tol), so the
    defaults end without a ConvergenceWarning, where 100 Newton iterations did not."""
    from mlmlearn._huber import _SIGMA_MIN

    X, y = _noisy(seed=3, n=80)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = HuberMLM(references=70).fit(X, y)
    assert np.all(model.scale_ == _SIGMA_MIN)
    with pytest.warns(ConvergenceWarning, match="increase max_iter"):
        HuberMLM(references=70, max_iter=1).fit(X, y)  # 10 ADMM iterations: too few
