"""The orientation adaptive minimal learning machine (thesis 2.3, paper III, paper IV II B)."""

import functools
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, _fit_context, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, check_memory

from .._distances import euclidean_distances
from .._linalg import NormalEquations, solve_distance_regression
from .._progress import progress
from ..atoms._neighbors import nearest_neighbors
from ..references import REFERENCES_CONSTRAINT, select_references
from ._alignment import Alignment, PermutationAlignment
from ._losses import RESTARTS, analytic_direction, numeric_direction, sphere_direction

__all__ = ["OAMLM"]

#: bytes of rotations (n_rows × K × 3 × 3 doubles) aligned in one chunk
_CHUNK_BYTES = 32 * 2**20


class OAMLM(MultiOutputMixin, BaseEstimator):
    """Unit force directions of atomic environments from invariant descriptors.

    The OAMLM (thesis section 2.3; paper III; paper IV section II B) learns,
    from rotation-invariant descriptors, how well each reference environment
    *aligns* with an input and how its force is oriented relative to the
    input's force:

    1. Fit: every training environment i is aligned with every reference j
       (a rotation R_ij and an accuracy g_ij, eqs. 2.24–2.26, by the
       ``alignment`` strategy); D_c = {ŷ_i · R_ij t̂_j} and D_g = {g_ij}.
       Where orderings of a symmetric environment fit equally well, R_ij is the
       mean of their rotations (:meth:`Alignment.align`), so R_ij t̂_j is the
       mean of their rotated directions and the predictions rotate with the
       structure however rounding would have broken the tie.
       Two distance regressions (2.20) map the descriptor distances D_in to
       them: B_c (dot products) and B_g (alignment accuracies), by least
       squares or, with ``epsilon``, by the Huber loss (2.27)–(2.28).
    2. Predict: d_c = d_in B_c and d_g = d_in B_g; the references are aligned
       with the input, and the direction v̂ comes from the rotated reference
       directions r_j = R_j t̂_j, the predicted dot products and the actual
       accuracies g_j through the ``loss``.

    Parameters
    ----------
    descriptor : transformer
        Maps :class:`~mlmlearn.atoms.AtomicEnvironments` to feature rows, e.g.
        ``make_pipeline(SOAP(...), MinMaxScaler())``. Cloned at fit; its
        parameters sweep as ``descriptor__...``.
    alignment : Alignment, default=None
        The alignment strategy; ``None`` means ``PermutationAlignment(4)``
        (paper III: the 4 nearest atoms, all 24 orderings). Cloned at fit.
    references : int, float, "all" or selector, default=100
        Reference environments among the training ones: RS-maximin on the
        descriptors for an int or fraction, every distinct row for ``"all"``,
        or a selector such as :class:`~mlmlearn.RSMaximin`.
    loss : {"analytic", "sphere", "numeric"}, default="analytic"
        How v̂ is found from the aligned references.

        - ``"analytic"``: eq. (2.32), Σ ω_j d_c,j r_j / Σ ω_j, normalised, with
          ω_j = exp(−(g_j/σ₂)²) (2.31) — paper IV's estimator, as published.
        - ``"sphere"``: the exact minimiser of the same loss (2.30) over unit
          vectors. (2.32) is its stationary point only when Σ ω r rᵀ ∝ I;
          the exact one solves (Σ ω r rᵀ − μI) v = Σ ω d r.
        - ``"numeric"``: eq. (2.29), −Σ exp(−((d_c,j − r_j·v)/σ₁)² − (g_j/σ₂)²),
          minimised over unit vectors from ``numeric_start`` (paper III: the
          direction to the nearest neighbour), over the references that pass
          ``reference_filter``, by ``numeric_solver``.
    sigma1 : float, default=0.25
        σ₁ of the numeric loss (2.29) (dimensionless, a width in dot product).
    sigma2 : float, default=0.5
        σ₂ of the weights (2.29)/(2.31), in Å of alignment accuracy.
    epsilon : float or None, default=None
        ``None`` trains B_c and B_g by least squares (2.20); a float ≥ 1 by
        Huber regression with that ε (p_Huber of paper III, 1.0–2.0), with
        intercepts, column by column as :class:`~mlmlearn.HuberMLM` does.
    alpha : float, default=1e-4
        L2 penalty of the Huber regressions (2.27).
    beta : float, default=1e-8
        Ridge term β/K of the least-squares regressions (2.18).
    reference_filter : bool, default=True
        Paper III: with ``loss="numeric"`` use only references whose actual
        accuracy is no worse than predicted, g_j ≤ d_g,j (all of them if none
        passes). The analytic and sphere losses weight every reference by ω.
    numeric_start : {"nearest", "analytic"}, default="nearest"
        Initial guess of the numeric loss: the direction to the nearest
        neighbour (paper III), or the analytic estimate (2.32) (the nearest
        neighbour where (2.32) is the zero vector). (2.29) is a sum
        of Gaussian ridges on the sphere with many local minima, so the start
        decides much of the result.
    numeric_solver : {"newton", "slsqp"}, default="newton"
        How the numeric loss is minimised (see
        :func:`~mlmlearn.oamlm._losses.numeric_direction`):

        - ``"newton"``: compiled Riemannian Newton steps on the sphere, every
          accepted step lowering J, to the local minimum below the start (to
          rounding), and again from ``numeric_restarts`` further starts, keeping
          the lowest minimum; 37–54× (paper III's filter) and 34–37× (all
          references) faster than SLSQP at K = 1 000 with the default restart (one
          core, ``benchmarks/bench_oamlm.py``).
        - ``"slsqp"``: paper III's SLSQP with the constraint ``v·v = 1``, one
          environment at a time, then the same Newton steps to the local minimum
          it ends near (SLSQP alone stops up to √(2 ftol/curvature) rad away).
          Its first steps leave the sphere, so it can end in another local
          minimum than the one below the start (7–14 % of Au25 hydrogens at
          K = 1 000, a shallower one in three cases of four); the predictions of
          earlier versions.
    numeric_restarts : int, default=1
        Further starts of ``numeric_solver="newton"`` per environment: the
        minimiser of (2.30) on the sphere, then the directions of the references
        of largest weight; the lowest J is kept (ties: the start's). Each costs
        about one more solve. With one, the answer is higher than SLSQP's in 0.1 %
        of Au25 hydrogens at K = 1 000 (1.9–3.4 % with none) and lower in 8–19 %; 0
        is the single-start solve of the start above. Unused by ``"slsqp"``.
    n_jobs : int, default=None
        Threads aligning row chunks (the compiled kernel releases the GIL).
    memory : str or joblib.Memory, default=None
        Caches the alignment products (D_c, D_g at fit; rotated directions and
        accuracies per predict chunk), so candidates of a search that differ
        only in ``sigma1``, ``sigma2`` or ``loss`` align once.
    verbose : int, default=0
        Progress bars on standard error: RS-maximin reference selection, the
        alignments (row chunks) at fit and predict, and with ``epsilon`` the
        Huber solver (columns of B_c and B_g converged, Newton iteration).

    Attributes
    ----------
    descriptor_ : transformer
        The fitted clone of ``descriptor``.
    alignment_ : Alignment
        The clone of the alignment strategy used.
    reference_indices_ : ndarray of int
        Training rows chosen as references.
    references_ : ndarray of shape (n_references_, n_features)
        Their descriptor rows (Q).
    reference_neighborhoods_ : ndarray or neighborhoods object
        Their neighborhoods (S).
    reference_directions_ : ndarray of shape (n_references_, 3)
        Their unit forces (T).
    coef_c_, coef_g_ : ndarray of shape (n_references_, n_references_)
        B_c and B_g.
    intercept_c_, intercept_g_ : ndarray of shape (n_references_,)
        Intercepts (zero unless ``epsilon`` is set).
    n_references_ : int

    See Also
    --------
    mlmlearn.metrics.weighted_average_angle : the papers' error measure.
    mlmlearn.oamlm.PermutationAlignment, mlmlearn.oamlm.GoldThiolateAlignment

    Notes
    -----
    ``score`` returns minus the force-weighted average angle (degrees), so
    a larger score is better, as model selection expects. It is what
    :func:`~sklearn.model_selection.cross_validate` and
    :class:`~sklearn.model_selection.GridSearchCV` use by default
    (``scoring=None``); :data:`mlmlearn.metrics.angle_scorer` is the same
    measure as an explicit scorer.

    Do not pass a regression scorer such as ``scoring="r2"`` or
    ``"neg_mean_squared_error"``: scikit-learn's scorers call ``predict`` and
    compare the unit directions with the force targets component by component,
    which means nothing here — and scikit-learn offers an estimator no hook to
    refuse them, so they run without complaint. For the same reason the OAMLM
    is not a ``RegressorMixin``: a scikit-learn regressor's ``score`` is R², and
    ``is_regressor(OAMLM(...))`` is ``False``.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import MinMaxScaler
    >>> from mlmlearn import OAMLM
    >>> from mlmlearn.atoms import SOAP, AtomicEnvironments
    >>> from mlmlearn.datasets import load_alkanes
    >>> frames = [f for f in load_alkanes().frames if f.info["run"] == "C3H8_run1"]
    >>> train = AtomicEnvironments(frames[:400:8], species="C")
    >>> test = AtomicEnvironments(frames[600::50], species="C")
    >>> descriptor = make_pipeline(SOAP(n_max=6, l_max=1, r_cut=3.0, sigma=1.0), MinMaxScaler())
    >>> model = OAMLM(descriptor, references=60).fit(train, train.forces)
    >>> directions = model.predict(test)
    >>> directions.shape  # 9 frames × 3 carbons
    (27, 3)
    >>> bool(-model.score(test, test.forces) < 45)  # degrees, force-weighted
    True
    """

    _parameter_constraints = {
        "descriptor": [HasMethods(["fit", "transform"])],
        "alignment": [Alignment, None],
        "references": REFERENCES_CONSTRAINT,
        "loss": [StrOptions({"analytic", "sphere", "numeric"})],
        "sigma1": [Interval(Real, 0, None, closed="neither")],
        "sigma2": [Interval(Real, 0, None, closed="neither")],
        "epsilon": [Interval(Real, 1.0, None, closed="left"), None],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "reference_filter": ["boolean"],
        "numeric_start": [StrOptions({"nearest", "analytic"})],
        "numeric_solver": [StrOptions({"newton", "slsqp"})],
        "numeric_restarts": [Interval(Integral, 0, None, closed="left")],
        "n_jobs": [Integral, None],
        "memory": [None, str, HasMethods(["cache"])],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        descriptor,
        *,
        alignment=None,
        references=100,
        loss="analytic",
        sigma1=0.25,
        sigma2=0.5,
        epsilon=None,
        alpha=1e-4,
        beta=1e-8,
        reference_filter=True,
        numeric_start="nearest",
        numeric_solver="newton",
        numeric_restarts=RESTARTS,
        n_jobs=None,
        memory=None,
        verbose=0,
    ):
        self.descriptor = descriptor
        self.alignment = alignment
        self.references = references
        self.loss = loss
        self.sigma1 = sigma1
        self.sigma2 = sigma2
        self.epsilon = epsilon
        self.alpha = alpha
        self.beta = beta
        self.reference_filter = reference_filter
        self.numeric_start = numeric_start
        self.numeric_solver = numeric_solver
        self.numeric_restarts = numeric_restarts
        self.n_jobs = n_jobs
        self.memory = memory
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Align the training environments with the references and solve B_c, B_g.

        Parameters
        ----------
        X : AtomicEnvironments
            Training environments (all of one alignment rule, e.g. one element).
        y : array-like of shape (n_environments, 3)
            Their forces (any norm; normalised here).

        Returns
        -------
        self
        """
        _check_environments(X)  # before the descriptor's fit sees X
        unit = _unit_forces(y, len(X))
        self.descriptor_ = clone(self.descriptor).fit(X)
        F = self._features(X)
        idx = np.asarray(select_references(self.references, F, verbose=self.verbose),
                         dtype=np.intp)
        self.reference_indices_ = idx
        self.references_ = F[idx]
        self.n_references_ = len(idx)
        self.alignment_ = (
            PermutationAlignment(4) if self.alignment is None else clone(self.alignment)
        )
        P = self.alignment_.neighborhoods(X)
        self.reference_neighborhoods_ = P[idx]
        self.reference_directions_ = unit[idx]
        memory = check_memory(self.memory)
        D_c, D_g = memory.cache(_fit_products, ignore=["n_jobs", "verbose"])(
            self.alignment_,
            P,
            self.reference_neighborhoods_,
            self.reference_directions_,
            unit,
            self.n_jobs,
            self.verbose,
        )
        # the references' squared norms, kept for the distances of every predict
        self._reference_sq_norms_ = np.einsum("ij,ij->i", self.references_, self.references_)
        D_in = euclidean_distances(F, self.references_, Y_norm_squared=self._reference_sq_norms_)
        k = self.n_references_
        self._normal_equations = None  # what partial_fit updates (least squares only)
        if self.epsilon is None:
            B, gram = solve_distance_regression(D_in, np.hstack([D_c, D_g]), self.beta,
                                                return_gram=True)
            c = np.zeros(2 * k)
            if gram is not None:
                self._normal_equations = NormalEquations(gram, self.beta / k, len(F))
        else:
            from .._huber import huber_regression

            B, c, _, self.n_iter_ = huber_regression(
                D_in, np.hstack([D_c, D_g]), epsilon=self.epsilon, alpha=self.alpha,
                verbose=self.verbose,
            )
        self.coef_c_, self.coef_g_ = B[:, :k], B[:, k:]
        self.intercept_c_, self.intercept_g_ = c[:k], c[k:]
        return self

    @_fit_context(prefer_skip_nested_validation=False)
    def partial_fit(self, X, y, sample_weight=None):
        """Add training environments to a fitted OAMLM, keeping its references.

        The new environments are described by the fitted descriptor, aligned with
        the fixed references (new rows of D_c and D_g) and their distances to the
        references (new rows of D_in) join the least-squares regressions (2.20)
        of B_c and B_g, updated through ``D_inᵀD_in`` (kept by the fit, 8K²
        bytes; see ``EMLM.partial_fit``). The result is the fit on every
        environment given so far with the references, descriptor and alignment
        of the first fit and the current ``beta``.

        Parameters
        ----------
        X : AtomicEnvironments
        y : array-like of shape (n_environments, 3)
            Their forces (any norm; normalised here).
        sample_weight : array-like of shape (n_environments,), default=None
            Weights ≥ 0 of the new rows (a weight m counts as the environment
            repeated m times); the fit's environments weigh 1.

        Returns
        -------
        self

        Raises
        ------
        NotImplementedError
            With ``epsilon`` set (the Huber regressions (2.27) have no update by
            sufficient statistics), or when the fit did not solve the normal
            equations by Cholesky (``beta=0`` or a numerically singular system).

        Notes
        -----
        Unfitted, ``partial_fit`` is ``fit``.
        """
        from sklearn.utils.validation import _check_sample_weight

        if not hasattr(self, "coef_c_"):
            if sample_weight is not None:
                raise ValueError(
                    "sample_weight: the first partial_fit fits the model (choosing its "
                    "references), and fit takes no weights; call fit first")
            return self.fit(X, y)
        if self.epsilon is not None:
            raise NotImplementedError(
                f"partial_fit with epsilon={self.epsilon!r}: the Huber regressions (2.27) "
                "have no update by sufficient statistics; refit, or use epsilon=None "
                "(least squares)")
        statistics = getattr(self, "_normal_equations", None)
        if statistics is None:
            raise NotImplementedError(
                f"partial_fit updates the Cholesky solution of (2.20), and this OAMLM was "
                f"fitted with beta={self.beta:g} by least squares (beta=0, a numerically "
                "singular system, or epsilon); refit it with a larger beta and epsilon=None")
        _check_environments(X)
        unit = _unit_forces(y, len(X))
        w = _check_sample_weight(sample_weight, np.empty((len(X), 0)), ensure_non_negative=True,
                                 allow_all_zero_weights=True)
        F = self._features(X)
        D_c, D_g = _fit_products(self.alignment_, self.alignment_.neighborhoods(X),
                                 self.reference_neighborhoods_, self.reference_directions_,
                                 unit, self.n_jobs, self.verbose)
        D_in = euclidean_distances(F, self.references_,
                                   Y_norm_squared=getattr(self, "_reference_sq_norms_", None))
        k = self.n_references_
        statistics, B, _ = statistics.update(
            D_in, np.hstack([D_c, D_g]), np.hstack([self.coef_c_, self.coef_g_]), weights=w,
            lam=self.beta / k, beta=self.beta)
        self._normal_equations = statistics
        self.coef_c_, self.coef_g_ = B[:, :k], B[:, k:]
        return self

    # -------------------------------------------------------------- predict
    def predict(self, X, *, return_uncertainty=False):
        """Unit force directions.

        Parameters
        ----------
        X : AtomicEnvironments
        return_uncertainty : bool, default=False
            Also return, per environment, the alignment accuracy (Å) that B_g
            predicts for the references the direction rests on, weighted as
            they are: Σ ω_j d_g,j / Σ ω_j. Paper III proposes B_g for this: an
            environment unlike the training data, or one whose references are
            expected to align badly, gets a large value.

        Returns
        -------
        directions : ndarray of shape (n_environments, 3)
        uncertainty : ndarray of shape (n_environments,)
            Only with ``return_uncertainty=True``.
        """
        from joblib import Parallel, delayed

        check_is_fitted(self, "coef_c_")
        # σ₁, σ₂, the loss, its solver and the filter act at predict and may be set after fit
        # (a σ sweep reuses the alignments), so they are validated here too
        self._validate_params()
        F = self._features(X)
        P = self.alignment_.neighborhoods(X)
        nearest = functools.cache(  # once, and with the analytic start only where needed
            lambda: nearest_neighbors(X, 1, None, name="the numeric loss's initial guess")[:, 0])
        if self.loss == "numeric" and self.numeric_start == "nearest":
            nearest()
        n, k = len(F), self.n_references_
        rows = _chunk_rows(k)
        products = check_memory(self.memory).cache(_predict_products)
        S, T = self.reference_neighborhoods_, self.reference_directions_
        norms = getattr(self, "_reference_sq_norms_", None)  # None: a model saved before
        # B_g (a K × K product per row) only where its predictions are used
        need_g = return_uncertainty or (self.loss == "numeric" and self.reference_filter)

        def chunk(lo):
            hi = min(lo + rows, n)
            rotated, g = products(self.alignment_, P[lo:hi], S, T)
            D_in = euclidean_distances(F[lo:hi], self.references_, Y_norm_squared=norms)
            d_c = D_in @ self.coef_c_ + self.intercept_c_
            d_g = D_in @ self.coef_g_ + self.intercept_g_ if need_g else None
            # (2.31), scaled per row by exp(min (g/σ₂)²) so that it cannot underflow to
            # all zeros; (2.32), the sphere minimiser and the uncertainty are invariant
            exponent = (g / self.sigma2) ** 2
            omega = np.exp(-(exponent - exponent.min(axis=1, keepdims=True)))
            if self.loss == "analytic":
                v = analytic_direction(omega, d_c, rotated)
            elif self.loss == "sphere":
                v = sphere_direction(omega, d_c, rotated)
            else:
                keep = g <= d_g if self.reference_filter else np.ones_like(g, dtype=bool)
                keep[~keep.any(axis=1)] = True  # nobody passes: all references
                if self.numeric_start == "nearest":
                    v0 = nearest()[lo:hi]
                else:
                    v0 = analytic_direction(omega, d_c, rotated)
                    # Σ ω d r = 0 (every r_j zero: tied rotations that average out) has no
                    # direction to start from: the nearest neighbour's instead
                    flat = ~np.any(v0 != 0, axis=1)
                    if flat.any():
                        v0[flat] = nearest()[lo:hi][flat]
                v = numeric_direction(d_c, g, rotated, self.sigma1, self.sigma2, v0, mask=keep,
                                      solver=self.numeric_solver,
                                      restarts=self.numeric_restarts)
            if not return_uncertainty:
                return v, None
            total = omega.sum(axis=1)
            return v, (omega * d_g).sum(axis=1) / np.where(total > 0, total, 1.0)

        starts = range(0, n, rows)
        parts = list(progress(  # the bar counts finished chunks, not dispatched ones
            Parallel(n_jobs=self.n_jobs, prefer="threads", return_as="generator")(
                delayed(chunk)(lo) for lo in starts),
            verbose=self.verbose, total=len(starts), desc="OAMLM predict"))
        v = np.vstack([p[0] for p in parts]) if parts else np.empty((0, 3))
        if return_uncertainty:
            return v, np.concatenate([p[1] for p in parts]) if parts else np.empty(0)
        return v

    def score(self, X, y, sample_weight=None):
        """Minus the force-weighted average angle (degrees) between ``y`` and the predictions.

        The default score of model selection (``scoring=None``); equal to
        :data:`mlmlearn.metrics.angle_scorer`.

        Parameters
        ----------
        X : AtomicEnvironments
        y : array-like of shape (n_environments, 3)
            Reference forces (eV/Å); each angle is weighted by ``|y|²``.
        sample_weight : None
            Not supported (raises ``ValueError``).

        Returns
        -------
        score : float
            −angle in degrees (≤ 0; larger is better).
        """
        from ..metrics import weighted_average_angle

        if sample_weight is not None:
            raise ValueError("sample_weight is not supported; the angle is weighted by |y|²")
        return -weighted_average_angle(y, self.predict(X))

    # -------------------------------------------------------------- helpers
    def _features(self, X):
        _check_environments(X)
        F = self.descriptor_.transform(X)
        return check_array(F, dtype=np.float64, input_name="descriptor output")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        return tags


def _unit_forces(y, n):
    y = np.asarray(y, dtype=float)
    if y.shape != (n, 3):
        raise ValueError(
            f"y must be the forces of the {n} environments, shape ({n}, 3); got {y.shape}"
        )
    if not np.all(np.isfinite(y)):
        bad = int(np.flatnonzero(~np.isfinite(y).all(axis=1))[0])
        raise ValueError(f"y must be finite; row {bad} is {y[bad]}")
    norms = np.linalg.norm(y, axis=1)
    if np.any(norms == 0):
        bad = int(np.flatnonzero(norms == 0)[0])
        raise ValueError(f"y row {bad} is a zero force, which has no direction")
    return y / norms[:, None]


def _chunk_rows(n_references):
    return max(1, _CHUNK_BYTES // (72 * max(n_references, 1)))


def _check_environments(X):
    """Raise a TypeError unless ``X`` is atomic environments (structures alone are ambiguous)."""
    if not all(hasattr(X, a) for a in ("structure_index", "atom_index", "structures")):
        raise TypeError(
            f"OAMLM takes AtomicEnvironments (the atoms whose force directions to predict), "
            f"got {type(X).__name__}; wrap structures as "
            "AtomicEnvironments(structures, species=...) or atom_types=..."
        )


def _fit_products(alignment, P, S, T, unit, n_jobs, verbose):
    """D_c = {ŷ_i · R_ij t̂_j} and D_g = {g_ij}, aligned in row chunks (threads)."""
    from joblib import Parallel, delayed

    n = len(P)
    rows = _chunk_rows(len(S))

    def chunk(lo):
        rotated, g = _predict_products(alignment, P[lo : lo + rows], S, T)
        return np.einsum("nki,ni->nk", rotated, unit[lo : lo + rows]), g

    starts = range(0, n, rows)
    parts = list(progress(  # the bar counts finished chunks, not dispatched ones
        Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(
            delayed(chunk)(lo) for lo in starts),
        verbose=verbose, total=len(starts), desc="OAMLM fit alignments"))
    return np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])


def _predict_products(alignment, P, S, T):
    """Rotated reference directions r_j = R_j t̂_j (n, K, 3) and accuracies g (n, K).

    R_j may be the mean of tied orderings' rotations (|r_j| ≤ 1), which is why
    only this linear use of R is made.
    """
    R, g = alignment.align(P, S)
    # R t̂ as three broadcast products: 2-3x faster than einsum("nkij,kj->nki", R, T)
    return R[..., 0] * T[:, 0, None] + R[..., 1] * T[:, 1, None] + R[..., 2] * T[:, 2, None], g
