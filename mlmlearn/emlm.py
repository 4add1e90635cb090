"""Extreme Minimal Learning Machine (thesis eq. 2.16–2.18; paper II)."""

from numbers import Real

import numpy as np
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import _check_sample_weight, validate_data

from ._base import DistanceRegressor
from ._distances import euclidean_distances
from ._inputs import reject_structures
from ._linalg import NormalEquations, solve_distance_regression
from .references import REFERENCES_CONSTRAINT

__all__ = ["EMLM"]

#: The thesis' regularisation: the square root of machine epsilon.
SQRT_EPS = float(np.sqrt(np.finfo(np.float64).eps))


class EMLM(DistanceRegressor):
    """Extreme Minimal Learning Machine: ridge regression on distances to references.

    With ``D`` the N×K Euclidean distances from the training inputs to K
    references, the weights solve (thesis eq. 2.16–2.18)

    ``(DᵀD + β/K · I) W = DᵀY``

    and a prediction is ``dᵀW`` with ``d`` the distances of the new input to the
    references. EMLM is kernel ridge regression with the Euclidean distance as
    kernel, restricted to K reference columns. The system is solved by Cholesky;
    when it is numerically singular, by an SVD least-squares solve of the same
    problem, with a :class:`scipy.linalg.LinAlgWarning`.

    **Departure from (2.18): the targets are centred by default.** With
    ``fit_intercept=True`` the system is solved for ``Y - ȳ`` (``ȳ`` the mean
    training target, stored as ``intercept_``) and a prediction is
    ``dᵀW + ȳ``. Distances are positive and grow away from the data, so a
    constant is not in their span; (2.18) has to build a large offset (a total
    energy of -310 eV, say) out of many large weights of opposite sign, and its
    error then swamps the small variations that are the actual signal
    (``y = -310 + 0.05 sin x₀`` with 50 references: RMSE 1.38 uncentred, 0.002
    centred). Centring changes nothing else: the matrix of (2.18), its
    conditioning and β are those of the thesis. ``fit_intercept=False`` is
    (2.18) exactly.

    Parameters
    ----------
    references : int, float, "all" or selector, default="all"
        The references: an int (count) or a float in (0, 1] (fraction of the
        samples) selected by :class:`~mlmlearn.RSMaximin`; ``"all"`` every
        distinct training sample (as in the thesis, where the training set is
        first sampled by RS-maximin and then saved whole as references); or a
        selector such as ``RandomReferences(500, random_state=0)``, cloned and
        fitted on the training inputs.
    beta : float, default=√(machine ε) ≈ 1.49e-8
        Regularisation β of eq. (2.16), as in the thesis.
    fit_intercept : bool, default=True
        Centre the targets by their training mean before solving (2.18) and
        add it back to predictions (see above); ``False`` solves (2.18) as
        printed.
    verbose : int, default=0
        Progress bar of the RS-maximin selection when ``references`` is a
        count or a fraction (thousands of references take a while).

    Attributes
    ----------
    coef_ : ndarray of shape (n_references_, n_outputs)
        Weight matrix W of eq. (2.18).
    intercept_ : ndarray of shape (n_outputs,)
        The mean training target ``ȳ`` added to predictions; zeros with
        ``fit_intercept=False``.
    references_ : ndarray of shape (n_references_, n_features_in_)
    reference_indices_ : ndarray of shape (n_references_,)
        Rows of the training inputs used as references.
    n_references_ : int
    n_features_in_ : int

    See Also
    --------
    MLM : regression between distance spaces with multilateration.
    sklearn.kernel_ridge.KernelRidge : the kernel method EMLM specialises.

    References
    ----------
    .. [1] T. Kärkkäinen, "Extreme minimal learning machine: Ridge regression with
       distance-based basis", Neurocomputing 342 (2019) 33–48.
    .. [2] A. Pihlajamäki, doctoral thesis (2022), section 2.3, eq. (2.16)–(2.18).

    Examples
    --------
    >>> import numpy as np
    >>> from mlmlearn import EMLM
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-3, 3, size=(200, 1))
    >>> y = np.sin(X[:, 0])
    >>> model = EMLM(references=40).fit(X, y)
    >>> float(np.round(model.score(X, y), 3))
    1.0
    """

    _parameter_constraints = {
        "references": REFERENCES_CONSTRAINT,
        "beta": [Interval(Real, 0, None, closed="left")],
        "fit_intercept": ["boolean"],
        "verbose": ["verbose"],
    }

    def __init__(self, references="all", *, beta=SQRT_EPS, fit_intercept=True, verbose=0):
        self.references = references
        self.beta = beta
        self.fit_intercept = fit_intercept
        self.verbose = verbose

    def partial_fit(self, X, y, sample_weight=None):
        """Add training samples to a fitted EMLM, keeping its references.

        The result is the fit of (2.18) on every sample given so far, with the
        references of the first fit and the current ``beta`` and
        ``fit_intercept``: with the references fixed, the solution depends on the
        samples only through ``DᵀD``, ``DᵀY`` and the sums behind the intercept,
        which the model keeps and updates (the fit stores
        ``DᵀD``, 8K² bytes). The cost is one K×K Cholesky, whatever the number
        of samples seen.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None
            Weights ≥ 0 of the new samples in the least-squares sum (a weight m
            counts as the sample repeated m times); the samples of ``fit`` weigh 1.

        Returns
        -------
        self

        Raises
        ------
        NotImplementedError
            When the fit did not solve the normal equations by Cholesky: with
            ``beta=0`` (a least-squares solve) or a numerically singular system
            (the SVD fallback); refit with a larger ``beta``.
        ValueError
            For inputs of another width or target count than the fit's, or
            ``fit_intercept`` changed since the fit.

        Notes
        -----
        Unfitted, ``partial_fit`` is ``fit`` (the references are chosen among
        these samples), as scikit-learn's incremental estimators begin.
        """
        if not hasattr(self, "coef_"):
            if sample_weight is not None:
                raise ValueError(
                    "sample_weight: the first partial_fit fits the model (choosing its "
                    "references), and fit takes no weights; call fit first")
            return self.fit(X, y)
        self._validate_params()
        reject_structures(X, type(self).__name__)
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True,
                             reset=False)
        Y = y.reshape(X.shape[0], -1)
        if Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} outputs; the model was fitted with "
                             f"{self.n_outputs_}")
        statistics = getattr(self, "_normal_equations", None)
        if statistics is None:
            raise NotImplementedError(
                f"partial_fit updates the Cholesky solution of (2.18), and this EMLM was "
                f"fitted with beta={self.beta:g} by least squares (beta=0, or a numerically "
                "singular system); refit it with a larger beta")
        if self.fit_intercept != (statistics.column_sums is not None):
            raise ValueError(f"fit_intercept={self.fit_intercept} differs from the fit's; "
                             "refit the model to change it")
        w = _check_sample_weight(sample_weight, X, ensure_non_negative=True,
                                 allow_all_zero_weights=True)
        D = euclidean_distances(X, self.references_, Y_norm_squared=self._references_sq)
        k = self.references_.shape[0]
        statistics, W, mean = statistics.update(
            D, Y, self.coef_, weights=w, mean=self.intercept_ if self.fit_intercept else None,
            lam=self.beta / k, beta=self.beta)
        self._normal_equations, self.coef_ = statistics, W
        if mean is not None:
            self.intercept_ = mean
        return self

    def _fit(self, D, Y, indices):
        self.n_outputs_ = Y.shape[1]
        if self.fit_intercept:
            self.intercept_ = Y.mean(axis=0)
            Y = Y - self.intercept_
        else:
            self.intercept_ = np.zeros(self.n_outputs_)
        self.coef_, gram = solve_distance_regression(D, Y, self.beta, return_gram=True)
        # what partial_fit updates (None: no Cholesky solution to update)
        self._normal_equations = None if gram is None else NormalEquations(
            gram, self.beta / D.shape[1], D.shape[0],
            D.sum(axis=0) if self.fit_intercept else None)

    def _predict(self, D):
        Y = D @ self.coef_
        Y += self.intercept_
        return Y
