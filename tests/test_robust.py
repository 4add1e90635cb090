import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import HuberRegressor
from sklearn.linear_model._huber import _huber_loss_and_gradient

from mlmlearn import MLM, HuberMLM
from mlmlearn.robust import huber_regression, optimal_scale


def test_batched_huber_matches_looped_huber_regressor():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    Y = X @ rng.normal(size=(4, 6)) + 1.0 + 0.3 * rng.standard_t(1.5, size=(200, 6))
    coef, intercept, scale, _ = huber_regression(X, Y, epsilon=1.35, alpha=1e-3, tol=1e-10)
    for k in range(Y.shape[1]):
        ref = HuberRegressor(epsilon=1.35, alpha=1e-3, tol=1e-12, max_iter=10000).fit(X, Y[:, k])
        np.testing.assert_allclose(coef[:, k], ref.coef_, atol=2e-5)
        assert intercept[k] == pytest.approx(ref.intercept_, abs=2e-5)
        assert scale[k] == pytest.approx(ref.scale_, abs=2e-5)


def test_huber_mlm_solves_huber_regressors_objective_on_distances():
    """On distance designs HuberRegressor stops early (L-BFGS-B's ftol); ours must be
    optimal by sklearn's own gradient and never worse in sklearn's own loss."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(250, 3))
    y = np.sin(X[:, 0]) + 0.2 * rng.standard_t(1.5, size=250)
    model = HuberMLM(references=12, epsilon=1.2, alpha=1e-3, tol=1e-6).fit(X, y)
    Din = np.linalg.norm(X[:, None] - model.references_[None], axis=2)
    Dout = np.abs(y[:, None] - model.output_references_[:, 0][None])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in range(model.n_references_):
            w = np.r_[model.coef_[:, k], model.intercept_[k], model.scale_[k]]
            loss, grad = _huber_loss_and_gradient(w, Din, Dout[:, k], 1.2, 1e-3, np.ones(250))
            assert np.abs(grad).max() <= 1e-6
            ref = HuberRegressor(epsilon=1.2, alpha=1e-3, tol=1e-10, max_iter=5000).fit(
                Din, Dout[:, k])
            w_ref = np.r_[ref.coef_, ref.intercept_, ref.scale_]
            loss_ref = _huber_loss_and_gradient(w_ref, Din, Dout[:, k], 1.2, 1e-3,
                                                np.ones(250))[0]
            assert loss <= loss_ref + 1e-9 * abs(loss_ref)


def test_optimal_scale_minimises_the_objective_in_sigma():
    rng = np.random.default_rng(2)
    R = rng.standard_t(2, size=(300, 5))
    eps = 1.35

    def f(s, r):
        a = np.abs(r)
        inl = a <= eps * s
        return len(r) * s + (r[inl] ** 2).sum() / s + (2 * eps * a[~inl] - eps**2 * s).sum()

    sigma = optimal_scale(R, eps)
    for k in range(5):
        for s in sigma[k] * np.array([0.98, 0.999, 1.001, 1.02]):
            assert f(sigma[k], R[:, k]) <= f(s, R[:, k])


def test_huber_mlm_resists_outliers_where_mlm_does_not():
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, size=(400, 1))
    clean = np.sin(X[:, 0])
    y = clean.copy()
    y[rng.choice(400, 40, replace=False)] += rng.choice([-6, 6], size=40)
    robust = HuberMLM(references=25, epsilon=1.0).fit(X, y)
    plain = MLM(references=25).fit(X, y)
    err_r = np.median(np.abs(robust.predict(X) - clean))
    err_p = np.median(np.abs(plain.predict(X) - clean))
    assert err_r < 0.5 * err_p


def test_not_converging_warns():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        HuberMLM(references=10, max_iter=1, tol=1e-12).fit(X, X[:, 0] + 0.1 * X[:, 1] ** 3)
