"""Robust MLM: B trained by Huber regression (thesis eq. 2.27–2.28; paper III).

The thesis trains every column of B with its own Huber regression, sharing the
design matrix ``D_in``. The batched solver that trains all the columns at once
is :func:`huber_regression`, public here.
"""

from numbers import Integral, Real

from sklearn.utils._param_validation import Interval, StrOptions

from ._huber import huber_regression
from .mlm import MLM
from .references import REFERENCES_CONSTRAINT

__all__ = ["HuberMLM", "huber_regression"]


class HuberMLM(MLM):
    """MLM whose distance regression B is trained robustly with the Huber loss.

    Each column k of B, with an intercept ``c_k`` and a scale ``σ_k``, minimises
    the Huber objective of eq. (2.27)–(2.28), exactly the one of
    :class:`sklearn.linear_model.HuberRegressor` with ``D_in`` as design matrix
    and column k of ``D_out`` as target:

    ``Σ_i [σ + H_ε((d_iᵀb + c - δ_ik)/σ) σ] + α |b|²``,
    ``H_ε(z) = z²`` for ``|z| ≤ ε``, ``2ε|z| - ε²`` otherwise.

    All columns are trained together by the batched solver
    :func:`mlmlearn.robust.huber_regression`. Prediction is that of
    :class:`~mlmlearn.MLM` with ``δ = d_inᵀB + c``. The intercepts c are part
    of (2.27), so HuberMLM needs no target centring: output-space distances
    ``|y - t_k|`` do not change when a constant is added to the targets, and
    the multilateration returns outputs relative to the output references.

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
        Newton iterations at most (and ``10·max_iter`` ADMM iterations for the
        columns whose σ collapses, see :func:`huber_regression`).
    tol : float, default=1e-5
        Stop a column when every component of its gradient is below ``tol`` in
        absolute value, the gradient taken with respect to the coefficients of
        the centred, unit-RMS columns of ``D_in``, the intercept and σ (units of
        the output distances). Unlike HuberRegressor's criterion on the raw
        coefficients, this does not depend on offsets or units of the inputs.
        A column whose σ collapses to its lower bound (K close to N) stops
        when its objective is proven within a relative ``tol`` of the optimum.
    multilateration : {"auto", "cubic", "linear", "nonlinear"}, default="auto"
        As in :class:`~mlmlearn.MLM`.
    lm_max_iter : int, default=20
        As in :class:`~mlmlearn.MLM`.
    verbose : int, default=0
        Progress bars on standard error: of the RS-maximin selection (as in
        :class:`~mlmlearn.MLM`) and of the Huber solver, counting the columns
        of B that have converged and showing the Newton iteration.

    Attributes
    ----------
    coef_ : ndarray of shape (n_references_, n_references_)
        The matrix B.
    intercept_ : ndarray of shape (n_references_,)
        Intercepts c, one per column.
    scale_ : ndarray of shape (n_references_,)
        Huber scales σ, one per column.
    n_iter_ : int
        Iterations of the slowest column (Newton, or ADMM for the columns
        solved at σ's lower bound).
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
    >>> model = HuberMLM(references=30, epsilon=1.1, max_iter=200).fit(X, y)
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
        "verbose": ["verbose"],
    }

    def __init__(self, references="all", *, epsilon=1.35, alpha=1e-4, max_iter=100, tol=1e-5,
                 multilateration="auto", lm_max_iter=20, verbose=0):
        self.references = references
        self.epsilon = epsilon
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.multilateration = multilateration
        self.lm_max_iter = lm_max_iter
        self.verbose = verbose

    def _fit_distance_map(self, D_in, D_out):
        B, c, self.scale_, self.n_iter_ = huber_regression(
            D_in, D_out, epsilon=self.epsilon, alpha=self.alpha, max_iter=self.max_iter,
            tol=self.tol, verbose=self.verbose)
        return B, c


