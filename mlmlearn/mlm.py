"""Minimal Learning Machine (thesis eq. 2.19–2.23; paper II)."""

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import DistanceRegressor
from ._distances import euclidean_distances
from ._linalg import solve_distance_regression
from .multilateration import (
    cubic_multilateration,
    linear_multilateration,
    nonlinear_multilateration,
)
from .references import REFERENCES_CONSTRAINT

__all__ = ["MLM"]


class MLM(DistanceRegressor):
    """Minimal Learning Machine: regression between distance spaces and multilateration.

    Training regresses the N×K output-space distances ``D_out`` (from the
    targets to the output references ``T``, the targets of the input
    references ``Q``) on the input-space distances ``D_in``, eq. (2.19)–(2.20):

    ``B = (D_inᵀ D_in + β/K · I)⁻¹ D_inᵀ D_out``

    (plain least squares for β = 0, as published). A prediction first estimates
    the output distances ``δ = d_inᵀ B`` (2.21), then finds the output whose
    distances to ``T`` match them, the multilateration problem (2.22).

    Unlike :class:`~mlmlearn.EMLM`, MLM has no ``fit_intercept``: it never
    regresses the targets themselves. The output distances ``|y - t_k|`` do not
    change when a constant is added to the targets, and multilateration
    returns outputs relative to the output references, so a target offset
    passes through exactly (up to rounding) and (2.20) is kept as published.

    Parameters
    ----------
    references : int, float, "all" or selector, default="all"
        The references: an int (count) or a float in (0, 1] (fraction of the
        samples) selected by :class:`~mlmlearn.RSMaximin`; ``"all"`` every
        distinct training sample; or a selector object, cloned and fitted on the
        training inputs.
    beta : float, default=0.0
        Ridge regularisation of B, with the meaning of EMLM's β (the ridge term
        is β/K); 0 is the least-squares solution (2.20).
    multilateration : {"auto", "cubic", "linear", "nonlinear"}, default="auto"
        Output stage. ``"cubic"``: exact minimiser of (2.22) from its cubic
        (2.23), single-output only (one compiled pass over the predicted
        distances when numba is installed, see
        :func:`~mlmlearn.multilateration.cubic_multilateration`).
        ``"nonlinear"``: batched Levenberg–Marquardt
        on ``Σ(|y - t_k|² - δ_k²)²`` from the linear solution. ``"linear"``: the
        linear least-squares solution alone. ``"auto"``: cubic for one output,
        nonlinear otherwise.
    lm_max_iter : int, default=20
        Levenberg–Marquardt iterations of the nonlinear output stage.
    verbose : int, default=0
        Progress bar of the RS-maximin selection when ``references`` is a
        count or a fraction.

    Attributes
    ----------
    coef_ : ndarray of shape (n_references_, n_references_)
        The matrix B of eq. (2.20).
    intercept_ : ndarray of shape (n_references_,)
        Zeros for MLM; the per-column intercepts c of robust training
        (:class:`~mlmlearn.HuberMLM`), so that ``δ = d_inᵀB + c``.
    references_ : ndarray of shape (n_references_, n_features_in_)
        Input references Q.
    output_references_ : ndarray of shape (n_references_, n_outputs_)
        Output references T.
    reference_indices_ : ndarray of shape (n_references_,)
    n_references_ : int
    n_outputs_ : int
    n_features_in_ : int

    See Also
    --------
    EMLM : ridge regression on input distances, no output stage.
    HuberMLM : MLM with B trained by Huber regression.

    References
    ----------
    .. [1] A. H. de Souza Júnior et al., "Minimal Learning Machine: A novel supervised
       distance-based approach for regression and classification",
       Neurocomputing 164 (2015) 34–44.
    .. [2] D. P. P. Mesquita et al., "Ensemble of efficient minimal learning machines
       for classification and regression", Neural Process. Lett. 46 (2017) 751–766.

    Examples
    --------
    >>> import numpy as np
    >>> from mlmlearn import MLM
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-3, 3, size=(300, 2))
    >>> y = np.sin(X[:, 0]) * np.cos(X[:, 1])
    >>> model = MLM(references=60).fit(X[:200], y[:200])
    >>> bool(model.score(X[200:], y[200:]) > 0.95)
    True
    """

    _parameter_constraints = {
        "references": REFERENCES_CONSTRAINT,
        "beta": [Interval(Real, 0, None, closed="left")],
        "multilateration": [StrOptions({"auto", "cubic", "linear", "nonlinear"})],
        "lm_max_iter": [Interval(Integral, 0, None, closed="left")],
        "verbose": ["verbose"],
    }

    def __init__(self, references="all", *, beta=0.0, multilateration="auto", lm_max_iter=20,
                 verbose=0):
        self.references = references
        self.beta = beta
        self.multilateration = multilateration
        self.lm_max_iter = lm_max_iter
        self.verbose = verbose

    def _fit(self, D, Y, indices):
        if self.multilateration == "cubic" and Y.shape[1] != 1:
            raise ValueError(
                f"multilateration='cubic' solves single-output problems only; y has "
                f"{Y.shape[1]} outputs: use 'nonlinear' or 'linear'"
            )
        self.output_references_ = Y[indices]
        self.n_outputs_ = Y.shape[1]
        D_out = euclidean_distances(Y, self.output_references_)
        self.coef_, self.intercept_ = self._fit_distance_map(D, D_out)

    def _fit_distance_map(self, D_in, D_out):
        """B (and intercepts) of ``D_out ≈ D_in B + c``; least squares (2.20) here."""
        B = solve_distance_regression(D_in, D_out, self.beta)
        return B, np.zeros(B.shape[1])

    def _predict(self, D):
        delta = D @ self.coef_
        delta += self.intercept_
        T = self.output_references_
        method = self.multilateration
        if method == "auto":
            method = "cubic" if T.shape[1] == 1 else "nonlinear"
        if method == "cubic":
            return cubic_multilateration(delta, T[:, 0])[:, None]
        if method == "linear":
            return linear_multilateration(delta, T)
        return nonlinear_multilateration(delta, T, max_iter=self.lm_max_iter)
