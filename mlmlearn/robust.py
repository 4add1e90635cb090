"""Robust MLM: B trained by Huber regression (thesis eq. 2.27–2.28; paper III).

The thesis trains every column of B with its own Huber regression, sharing the
design matrix ``D_in``; done one column at a time (one
:class:`sklearn.linear_model.HuberRegressor` per reference) that is K separate
fits, hours at K = 2500. :func:`huber_regression` solves all the columns
together: a semismooth Newton method on each column's objective, the Newton
systems of all columns solved by one batched conjugate-gradient loop whose
products are matrix–matrix (BLAS 3) and whose preconditioner is a single
Cholesky factor of ``DᵀD`` shared by every column and every iteration.
"""

import warnings
from numbers import Integral, Real

import numpy as np
from scipy import linalg
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions

from .mlm import MLM
from .references import REFERENCES_CONSTRAINT

__all__ = ["HuberMLM", "huber_regression"]

_SIGMA_MIN = 10.0 * np.finfo(np.float64).eps  # the lower bound HuberRegressor puts on σ


class HuberMLM(MLM):
    """MLM whose distance regression B is trained robustly with the Huber loss.

    Each column k of B, with an intercept ``c_k`` and a scale ``σ_k``, minimises
    the Huber objective of eq. (2.27)–(2.28), exactly the one of
    :class:`sklearn.linear_model.HuberRegressor` with ``D_in`` as design matrix
    and column k of ``D_out`` as target:

    ``Σ_i [σ + H_ε((d_iᵀb + c - δ_ik)/σ) σ] + α |b|²``,
    ``H_ε(z) = z²`` for ``|z| ≤ ε``, ``2ε|z| - ε²`` otherwise.

    All columns are trained together by :func:`huber_regression`. Prediction is
    that of :class:`~mlmlearn.MLM` with ``δ = d_inᵀB + c``.

    Parameters
    ----------
    references : int, float, "all" or selector, default="all"
        As in :class:`~mlmlearn.MLM`.
    epsilon : float, default=1.35
        Huber parameter ε ≥ 1 (``p_Huber`` of the thesis, which sweeps 1.0–2.0);
        smaller is more robust.
    alpha : float, default=1e-4
        L2 penalty α on B (not on the intercepts), eq. (2.27).
    max_iter : int, default=100
        Newton iterations at most.
    tol : float, default=1e-5
        Stop a column when every component of its gradient is below ``tol`` in
        absolute value (HuberRegressor's ``gtol`` criterion).
    multilateration : {"auto", "cubic", "linear", "nonlinear"}, default="auto"
        As in :class:`~mlmlearn.MLM`.
    lm_max_iter : int, default=20
        As in :class:`~mlmlearn.MLM`.

    Attributes
    ----------
    coef_ : ndarray of shape (n_references_, n_references_)
        The matrix B.
    intercept_ : ndarray of shape (n_references_,)
        Intercepts c, one per column.
    scale_ : ndarray of shape (n_references_,)
        Huber scales σ, one per column.
    n_iter_ : int
        Newton iterations of the slowest column.
    references_, output_references_, reference_indices_, n_references_,
    n_outputs_, n_features_in_
        As in :class:`~mlmlearn.MLM`.

    See Also
    --------
    MLM : least-squares training of B.
    sklearn.linear_model.HuberRegressor : the same objective for one column.

    References
    ----------
    .. [1] J. P. P. Gomes et al., "A Robust Minimal Learning Machine based on the
       M-Estimator", ESANN 2017, 383–388.
    .. [2] A. B. Owen, "A robust hybrid of lasso and ridge regression",
       Contemporary Mathematics 443 (2007) 59–72 (the joint scale estimate).

    Examples
    --------
    >>> import numpy as np
    >>> from mlmlearn import HuberMLM
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-3, 3, size=(300, 1))
    >>> y = np.sin(X[:, 0])
    >>> y[::10] += 5.0  # gross outliers in every tenth target
    >>> model = HuberMLM(references=30, epsilon=1.1).fit(X, y)
    >>> clean = np.sin(X[:, 0])
    >>> bool(np.median(np.abs(model.predict(X) - clean)) < 0.1)
    True
    """

    _parameter_constraints = {
        "references": REFERENCES_CONSTRAINT,
        "epsilon": [Interval(Real, 1.0, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "multilateration": [StrOptions({"auto", "cubic", "linear", "nonlinear"})],
        "lm_max_iter": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, references="all", *, epsilon=1.35, alpha=1e-4, max_iter=100, tol=1e-5,
                 multilateration="auto", lm_max_iter=20):
        self.references = references
        self.epsilon = epsilon
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.multilateration = multilateration
        self.lm_max_iter = lm_max_iter

    def _fit_distance_map(self, D_in, D_out):
        B, c, self.scale_, self.n_iter_ = huber_regression(
            D_in, D_out, epsilon=self.epsilon, alpha=self.alpha, max_iter=self.max_iter,
            tol=self.tol)
        return B, c



def huber_regression(X, Y, *, epsilon=1.35, alpha=1e-4, fit_intercept=True, max_iter=100,
                     tol=1e-5):
    """Huber regressions of every column of ``Y`` on the shared design matrix ``X``.

    Column k minimises HuberRegressor's objective (thesis eq. 2.27)

    ``f(w, c, σ) = nσ + Σ_inliers r²/σ + Σ_outliers (2ε|r| - ε²σ) + α|w|²``,
    ``r = y_k - Xw - c``, inliers ``|r| ≤ εσ``,

    which is jointly convex in (w, c, σ). Starting from the ridge solution,
    each iteration takes a semismooth Newton step in (w, c) at fixed σ for every
    unconverged column
    — the Newton systems solved together by preconditioned conjugate gradients,
    the preconditioner ``(σ_k/2)(XᵀX + ασ̄)⁻¹`` coming from one Cholesky factor —
    followed by a backtracking (Armijo) line search per column that keeps σ
    positive.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    Y : ndarray of shape (n_samples, n_targets)
    epsilon : float, default=1.35
    alpha : float, default=1e-4
    fit_intercept : bool, default=True
    max_iter : int, default=100
    tol : float, default=1e-5
        A column has converged when the largest absolute component of its
        gradient (coefficients, intercept and scale) is at most ``tol``, or when
        its line search finds no decrease measurable in float64. Columns still
        above ``tol`` after ``max_iter`` iterations raise a ConvergenceWarning.

    Returns
    -------
    coef : ndarray of shape (n_features, n_targets)
    intercept : ndarray of shape (n_targets,)
    scale : ndarray of shape (n_targets,)
    n_iter : int
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    n, m = X.shape
    A = np.hstack([X, np.ones((n, 1))]) if fit_intercept else X
    P = A.shape[1]
    pen = np.ones(P)
    if fit_intercept:
        pen[-1] = 0.0
    problem = _HuberProblem(A, epsilon, alpha, pen)

    # ridge start and a robust scale
    G = A.T @ A
    theta = linalg.solve(G + np.diag(alpha * pen + 1e-12 * np.trace(G) / P), A.T @ Y,
                         assume_a="pos", check_finite=False)
    sigma = optimal_scale(Y - A @ theta, epsilon)
    sigma_ref = float(np.median(sigma))
    problem.set_metric(G + np.diag(alpha * sigma_ref * pen + 1e-10 * np.trace(G) / P))

    active = np.arange(Y.shape[1])
    damping = np.full(Y.shape[1], 1e-2)
    stalled = np.zeros(0, dtype=np.intp)
    n_iter = 0
    while True:
        state = problem.evaluate(theta[:, active], sigma[active], Y[:, active])
        keep = ~state.converged(tol, sigma[active])
        active, state = active[keep], state.subset(keep)
        if active.size == 0 or n_iter == max_iter:
            break
        n_iter += 1
        th, sg, Ya = theta[:, active], sigma[active], Y[:, active]
        mu = damping[active]
        dth = problem.newton_direction(state, sg, mu)
        new_th, moved, full = problem.line_search(th, sg, Ya, dth, state)
        damping[active] = np.clip(np.where(full, mu / 4.0, mu * 4.0), 1e-8, 1e8)
        theta[:, active] = new_th
        # σ has a closed-form minimiser given the residuals (block coordinate descent)
        sigma[active] = optimal_scale(Ya - A @ new_th, epsilon)
        # no decrease measurable in float64: this column cannot get closer to tol
        stalled = np.concatenate([stalled, active[~moved]])
        active = active[moved]
    # columns that stalled can get no closer in float64 (L-BFGS-B stops silently
    # there too); only running out of iterations is reported
    if active.size:
        final = problem.evaluate(theta[:, active], sigma[active], Y[:, active])
        worst = np.abs(np.vstack([final.g_theta, final.g_sigma])).max()
        warnings.warn(
            f"huber_regression: {active.size} of {Y.shape[1]} columns did not reach "
            f"tol={tol:g} within max_iter={max_iter} Newton iterations (largest gradient "
            f"component {worst:.3g}); increase max_iter or alpha",
            ConvergenceWarning,
            stacklevel=2,
        )
    if fit_intercept:
        return theta[:-1], theta[-1], sigma, n_iter
    return theta, np.zeros(Y.shape[1]), sigma, n_iter


def optimal_scale(R, epsilon):
    """The σ minimising the Huber objective for fixed residuals, per column.

    For ``m`` inliers (the ``m`` smallest ``|r|``) the objective
    ``nσ + Σ_in r²/σ - (n - m) ε² σ + const`` is minimised by
    ``σ_m = √(Σ_in r² / (n - (n - m) ε²))``; the objective is convex in σ, so the
    answer is the ``σ_m`` consistent with its own inlier set,
    ``|r|_(m) ≤ ε σ_m < |r|_(m+1)``.

    Parameters
    ----------
    R : ndarray of shape (n_samples, n_targets)
    epsilon : float

    Returns
    -------
    sigma : ndarray of shape (n_targets,), at least HuberRegressor's lower bound
    """
    n = R.shape[0]
    a = np.sort(np.abs(R), axis=0)
    cum = np.vstack([np.zeros((1, R.shape[1])), np.cumsum(a * a, axis=0)])  # (n+1, k)
    m = np.arange(n + 1)[:, None]
    denom = n - (n - m) * epsilon**2
    with np.errstate(divide="ignore", invalid="ignore"):
        cand = np.sqrt(np.where(denom > 0, cum / denom, np.nan))
    lower = np.vstack([np.zeros((1, R.shape[1])), a])  # |r|_(m), the largest inlier
    upper = np.vstack([a, np.full((1, R.shape[1]), np.inf)])  # |r|_(m+1)
    ok = (lower <= epsilon * cand) & (epsilon * cand < upper)
    first = np.argmax(ok, axis=0)
    sigma = cand[first, np.arange(R.shape[1])]
    fallback = ~ok.any(axis=0) | ~np.isfinite(sigma)
    sigma[fallback] = np.sqrt(np.mean(R[:, fallback] ** 2, axis=0))
    return np.maximum(sigma, _SIGMA_MIN)


class _State:
    """Residual quantities of a batch of columns at one point."""

    def __init__(self, inlier, loss, g_theta, g_sigma):
        self.inlier, self.loss, self.g_theta, self.g_sigma = inlier, loss, g_theta, g_sigma

    def subset(self, keep):
        return _State(self.inlier[:, keep], self.loss[keep], self.g_theta[:, keep],
                      self.g_sigma[keep])

    def converged(self, tol, sigma):
        g_sigma = self.g_sigma.copy()
        at_bound = (sigma <= _SIGMA_MIN * (1 + 1e-12)) & (g_sigma > 0)
        g_sigma[at_bound] = 0.0  # projected gradient at σ's lower bound
        gmax = np.maximum(np.abs(self.g_theta).max(axis=0), np.abs(g_sigma))
        return gmax <= tol


class _HuberProblem:
    """Objective, gradient and Hessian products of the batched Huber problem."""

    def __init__(self, A, epsilon, alpha, pen):
        self.A, self.eps, self.alpha, self.pen = A, epsilon, alpha, pen
        self.n = A.shape[0]

    def set_metric(self, gram_reg):
        """``AᵀA + ασ̄E``: the all-inlier Hessian (up to 2/σ) and, inverted once as an
        explicit matrix, the preconditioner — one GEMM per CG step (two triangular
        solves per step were 10x slower with threaded BLAS at small sizes)."""
        self.gram_reg = gram_reg
        self.pre = linalg.cho_solve(linalg.cho_factor(gram_reg, check_finite=False),
                                    np.eye(gram_reg.shape[0]), check_finite=False)

    def loss(self, theta, sigma, Y):
        R = Y - self.A @ theta
        return self._loss_from(R, theta, sigma)[0]

    def _loss_from(self, R, theta, sigma):
        absr = np.abs(R)
        inlier = absr <= self.eps * sigma
        sq = np.where(inlier, R * R, 0.0).sum(axis=0)
        out_abs = np.where(inlier, 0.0, absr).sum(axis=0)
        n_out = self.n - inlier.sum(axis=0)
        wpen = (self.pen[:, None] * theta * theta).sum(axis=0)
        loss = (self.n * sigma + sq / sigma + 2.0 * self.eps * out_abs
                - sigma * n_out * self.eps**2 + self.alpha * wpen)
        return loss, inlier, sq, n_out

    def evaluate(self, theta, sigma, Y):
        R = Y - self.A @ theta
        loss, inlier, sq, n_out = self._loss_from(R, theta, sigma)
        psi = np.where(inlier, 2.0 * R / sigma, 2.0 * self.eps * np.sign(R))
        g_theta = -(self.A.T @ psi) + 2.0 * self.alpha * self.pen[:, None] * theta
        g_sigma = self.n - n_out * self.eps**2 - sq / sigma**2
        return _State(inlier, loss, g_theta, g_sigma)

    def newton_direction(self, state, sigma, mu, rtol=1e-2, max_cg=20):
        """Batched PCG on ``(H_θθ + μ M) dθ = -g_θ`` at fixed σ, per column to ``rtol·|g|``.

        ``M = (2/σ_k)(AᵀA + ασ̄E)`` is the Hessian with every sample an inlier,
        which majorises the Huber Hessian; its inverse is the preconditioner,
        one matrix for all columns. Large damping μ gives the monotone
        majorise–minimise step ``-M⁻¹g/(1+μ)``, small μ the Newton step.
        """

        def precondition(r):
            return (0.5 * sigma) * (self.pre @ r)

        r = -state.g_theta
        x = np.zeros_like(r)
        z = precondition(r)
        p = z.copy()
        rz = np.einsum("ij,ij->j", r, z)
        stop = np.linalg.norm(r, axis=0) * rtol
        live = np.ones(r.shape[1], dtype=bool)
        for _ in range(max_cg):
            Ap = self.A @ p
            Ap *= state.inlier
            hp = (2.0 / sigma) * (self.A.T @ Ap) + 2.0 * self.alpha * self.pen[:, None] * p
            hp += mu * (2.0 / sigma) * (self.gram_reg @ p)
            curv = np.einsum("ij,ij->j", p, hp)
            live &= curv > 0
            if not live.any():
                break
            step = np.where(live, rz / np.where(live, curv, 1.0), 0.0)
            x += step * p
            r -= step * hp
            live &= np.linalg.norm(r, axis=0) > stop
            if not live.any():
                break
            z = precondition(r)
            rz_new = np.einsum("ij,ij->j", r, z)
            beta = np.where(live, rz_new / np.where(rz != 0, rz, 1.0), 0.0)
            p = np.where(live, z + beta * p, p)
            rz = rz_new
        # a column whose CG made no progress falls back to the preconditioned gradient
        none = ~np.any(x != 0, axis=0)
        if none.any():
            x[:, none] = precondition(-state.g_theta[:, none])
        return x

    def line_search(self, theta, sigma, Y, dth, state, c1=1e-4, max_halvings=40):
        """Backtracking Armijo step in θ per column at fixed σ.

        Returns the new coefficients and, per column, whether they moved.
        """
        slope = np.einsum("ij,ij->j", state.g_theta, dth)
        t = np.ones(sigma.size)
        new_theta = theta.copy()
        pending = np.flatnonzero(slope < 0)  # a non-descent direction leaves the column
        for _ in range(max_halvings):
            if pending.size == 0:
                break
            tp = t[pending]
            th = theta[:, pending] + tp * dth[:, pending]
            loss = self.loss(th, sigma[pending], Y[:, pending])
            ok = loss <= state.loss[pending] + c1 * tp * slope[pending]
            new_theta[:, pending[ok]] = th[:, ok]
            pending = pending[~ok]
            t[pending] *= 0.5
        moved = np.ones(sigma.size, dtype=bool)
        moved[pending] = False
        moved[slope >= 0] = False
        return new_theta, moved, t == 1.0
