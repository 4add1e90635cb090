"""Reference selection: which training samples become the references of a model.

Every model of the Minimal Learning Machine family works in the space of
distances to K reference points chosen from the training inputs (thesis
section 2.3). The thesis and papers II–IV choose them by RS-maximin
(farthest-point) sampling; random selection is the classical MLM choice.

Both selectors are scikit-learn transformers: ``fit(X)`` chooses the
references and ``transform(X)`` returns the N×K distances to them, so
``make_pipeline(RSMaximin(500), Ridge())`` is a distance-basis model by
itself. The estimators accept one of these objects (cloned, then fitted on the
training inputs) through their ``references`` parameter.
"""

import warnings
from math import ceil
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._distances import euclidean_distances
from ._inputs import reject_structures
from ._maximin import projection_bounds, pruned_update, squared_distances
from ._progress import progress

__all__ = ["RSMaximin", "RandomReferences", "select_references", "unique_row_indices"]

_N_REFERENCES = [Interval(Integral, 1, None, closed="left"), Interval(Real, 0, 1, closed="right")]

#: Constraint shared by every estimator's ``references`` parameter.
REFERENCES_CONSTRAINT = [*_N_REFERENCES, StrOptions({"all"}), HasMethods(["fit", "transform"])]


def _n_references(n_references, n_samples):
    """Resolve an int or a fraction to a count, checking it against ``n_samples``."""
    if isinstance(n_references, Integral):
        k = int(n_references)
    else:
        k = max(1, ceil(n_references * n_samples))
    if k > n_samples:
        raise ValueError(
            f"n_references={k} exceeds n_samples={n_samples}: too few samples for the "
            "references requested; lower n_references or pass a fraction such as 0.5"
        )
    return k


def unique_row_indices(X, candidates=None):
    """Indices of the first occurrence of each distinct row, in their original order.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    candidates : ndarray of int, default=None
        Only these rows are considered (in this order); default all rows.

    Returns
    -------
    indices : ndarray of int
    """
    if candidates is None:
        candidates = np.arange(X.shape[0])
    _, first = np.unique(X[candidates], axis=0, return_index=True)
    return candidates[np.sort(first)]


def _warn_fewer(cls_name, requested, found):
    warnings.warn(
        f"{cls_name}: only {found} distinct references among the samples, fewer than the "
        f"{requested} requested; duplicates are not used (they make the distance "
        "system singular)",
        UserWarning,
        stacklevel=3,
    )


class _ReferenceSelector(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Common fit/transform of the selectors; subclasses implement ``_select``."""

    def fit(self, X, y=None):
        """Choose the references among the rows of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self

        Raises
        ------
        TypeError
            If ``X`` holds structures or atomic environments instead of
            descriptor rows.
        ValueError
            If more references are requested than there are samples.
        """
        self._validate_params()
        reject_structures(X, type(self).__name__)
        X = validate_data(self, X, dtype=np.float64)
        k = _n_references(self.n_references, X.shape[0])
        self.indices_ = self._select(X, k)
        self.references_ = X[self.indices_]
        self.n_references_ = self.indices_.size
        return self

    def transform(self, X):
        """Distances from the rows of ``X`` to the references.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        D : ndarray of shape (n_samples, n_references_)
        """
        check_is_fitted(self)
        reject_structures(X, type(self).__name__)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return euclidean_distances(X, self.references_)

    @property
    def _n_features_out(self):
        return self.n_references_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags


class RSMaximin(_ReferenceSelector):
    """RS-maximin (farthest-point) reference selection.

    The first reference is the sample nearest the data mean; every further one is
    the sample farthest from all references chosen so far (thesis section 3.3,
    "the first selected data point is closest to the data mean and then the
    following points should maximize the distance to the previous points").
    The selection is deterministic.

    The running minimum distance of every sample to the chosen set is updated
    incrementally with each new reference (no N×K matrix in memory). Most of
    those updates are skipped without computing the distance: every sample is
    projected once onto ``p`` (≤ 64) orthonormal directions near the data's
    leading principal axes, and the projected distance, tightened by the norms of
    the residuals outside the projection, is a lower bound of the true one. A
    sample whose bound, less a rounding margin derived from the magnitudes
    involved, reaches its running minimum cannot get nearer to the new
    reference. Every distance that is computed uses one fixed-order formula, so
    the choices and ``min_distances_`` are bit for bit those of the plain loop
    (all N samples updated with every reference); on real SOAP descriptors
    (2 030 features) about 0.5 % of the distances are computed. The loops are
    compiled with numba when it is installed (mlmlearn's ``atoms`` extra) and
    run in numpy otherwise, with the same result. Details and the error
    analysis: ``mlmlearn/_maximin.py``.

    Squared distances are compared throughout; ties (equal squared distances)
    go to the lowest index, and the selection stops early, with a warning,
    when every remaining sample duplicates a reference.

    Parameters
    ----------
    n_references : int or float, default=100
        Number of references; a float in (0, 1] is a fraction of the samples.
    verbose : int, default=0
        Show a progress bar (needs tqdm).

    Attributes
    ----------
    indices_ : ndarray of shape (n_references_,)
        Rows of the training data chosen, in the order of selection.
    references_ : ndarray of shape (n_references_, n_features_in_)
    n_references_ : int
        Fewer than requested (with a warning) only when the data has fewer
        distinct samples: duplicates are never chosen.
    min_distances_ : ndarray of shape (n_samples,)
        Distance of every training sample to its nearest reference.
    n_features_in_ : int

    See Also
    --------
    RandomReferences : uniformly random references.

    References
    ----------
    .. [1] T. F. Gonzalez, "Clustering to minimize the maximum intercluster
       distance", Theor. Comput. Sci. 38 (1985) 293–306.
    .. [2] J. Hämäläinen et al., "Minimal Learning Machine: Theoretical results and
       clustering-based reference point selection", JMLR 21 (2020) 1–29.

    Examples
    --------
    >>> import numpy as np
    >>> from mlmlearn import RSMaximin
    >>> X = np.array([[0.0], [1.0], [2.0], [10.0]])
    >>> RSMaximin(n_references=3).fit(X).indices_
    array([2, 3, 0])
    >>> RSMaximin(n_references=2).fit_transform(X)[:, 1]
    array([10.,  9.,  8.,  0.])
    """

    _parameter_constraints = {"n_references": _N_REFERENCES, "verbose": ["verbose"]}

    def __init__(self, n_references=100, *, verbose=0):
        self.n_references = n_references
        self.verbose = verbose

    def _select(self, X, k):
        indices, self.min_distances_ = rs_maximin(X, k, verbose=self.verbose)
        if indices.size < k:
            _warn_fewer(type(self).__name__, k, indices.size)
        return indices


def _default_components(n_samples, n_features, n_references):
    """Dimension of the pruning projection: 0 (plain updates) when it cannot pay off."""
    p = min(64, n_features // 4)
    return p if p >= 2 and n_references > p and n_samples > 4 * p else 0


def rs_maximin(X, n_references, *, n_components=None, verbose=0):
    """Farthest-point selection; see :class:`RSMaximin`.

    Returns the indices and minimum distances of :func:`_rs_maximin_plain`,
    bit for bit, while skipping the distances a lower bound proves cannot lower
    a sample's running minimum.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float64
    n_references : int
    n_components : int, default=None
        Dimension ``p`` of the orthonormal projection whose distances bound the
        true ones from below (``0 <= p <= n_features``); ``0`` updates every
        sample with every reference. ``None`` takes ``min(64, n_features // 4)``
        when the selection is long enough to repay the projection, else 0.
        The result never depends on it, only the time.
    verbose : int, default=0

    Returns
    -------
    indices : ndarray of int
        At most ``n_references`` rows (fewer if there are fewer distinct rows).
    min_distances : ndarray of shape (n_samples,)

    Raises
    ------
    ValueError
        If ``n_components`` is outside ``[0, n_features]``.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    n, d = X.shape
    if n_components is None:
        p = _default_components(n, d, n_references)
    elif isinstance(n_components, Integral) and 0 <= n_components <= d:
        p = int(n_components)
    else:
        raise ValueError(f"rs_maximin: n_components={n_components!r} must be an int in "
                         f"[0, n_features={d}]")
    mean = X.mean(axis=0)
    first = int(np.argmin(squared_distances(X, mean)))
    chosen = np.empty(n_references, dtype=np.intp)
    chosen[0] = first
    mind2 = squared_distances(X, X[first])  # running squared minimum distances
    if p:
        bounds = projection_bounds(X, mean, p)
        mind = np.sqrt(mind2)
    count = 1
    for j in progress(range(1, n_references), verbose=verbose, total=n_references - 1,
                      desc="RS-maximin"):
        nxt = int(np.argmax(mind2))
        if mind2[nxt] == 0.0:  # every remaining sample duplicates a reference
            break
        chosen[j] = nxt
        count = j + 1
        if p:
            pruned_update(X, bounds, mind2, mind, nxt)
        else:
            np.minimum(mind2, squared_distances(X, X[nxt]), out=mind2)
    return chosen[:count].copy(), np.sqrt(mind2)


def _rs_maximin_plain(X, n_references):
    """The plain algorithm, oracle of :func:`rs_maximin` (identical indices and distances).

    Squared distances by the one pair formula of :func:`mlmlearn._maximin.squared_distances`.
    The first reference is the sample nearest the column mean (the lowest index
    on a tie); then, repeatedly, the sample whose squared distance to its nearest
    reference is largest (the lowest index on a tie), every sample's minimum
    updated over all samples; it stops early when that largest value is 0 (every
    remaining sample duplicates a reference). ``min_distances`` is the square
    root of the final squared minima.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    first = int(np.argmin(squared_distances(X, X.mean(axis=0))))
    chosen = [first]
    mind2 = squared_distances(X, X[first])
    while len(chosen) < n_references:
        nxt = int(np.argmax(mind2))
        if mind2[nxt] == 0.0:
            break
        chosen.append(nxt)
        np.minimum(mind2, squared_distances(X, X[nxt]), out=mind2)
    return np.array(chosen, dtype=np.intp), np.sqrt(mind2)


class RandomReferences(_ReferenceSelector):
    """Uniformly random reference selection (the classical MLM choice).

    Parameters
    ----------
    n_references : int or float, default=100
        Number of references; a float in (0, 1] is a fraction of the samples.
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    indices_ : ndarray of shape (n_references_,)
        Rows of the training data chosen, sorted.
    references_ : ndarray of shape (n_references_, n_features_in_)
    n_references_ : int
        Fewer than requested (with a warning) only when the data has fewer
        distinct samples: duplicates are never chosen.
    n_features_in_ : int

    See Also
    --------
    RSMaximin : deterministic farthest-point references.

    Examples
    --------
    >>> import numpy as np
    >>> from mlmlearn import RandomReferences
    >>> X = np.arange(20.0).reshape(10, 2)
    >>> RandomReferences(n_references=3, random_state=0).fit_transform(X).shape
    (10, 3)
    """

    _parameter_constraints = {"n_references": _N_REFERENCES, "random_state": ["random_state"]}

    def __init__(self, n_references=100, *, random_state=None):
        self.n_references = n_references
        self.random_state = random_state

    def _select(self, X, k):
        order = check_random_state(self.random_state).permutation(X.shape[0])
        chosen = unique_row_indices(X, order[:k])
        taken = k
        while chosen.size < k and taken < order.size:  # replace duplicates drawn
            more = order[taken : taken + (k - chosen.size)]
            taken += more.size
            chosen = unique_row_indices(X, np.concatenate([chosen, more]))
        if chosen.size < k:
            _warn_fewer(type(self).__name__, k, chosen.size)
        return np.sort(chosen)


def select_references(references, X, *, verbose=0):
    """Row indices of the references an estimator's ``references`` parameter asks for.

    Parameters
    ----------
    references : int, float, "all" or selector
        An int or a fraction means :class:`RSMaximin` with that many references;
        ``"all"`` every distinct training sample; a selector (any transformer that
        sets ``indices_`` in ``fit``) is cloned and fitted on ``X``.
    X : ndarray of shape (n_samples, n_features), validated
    verbose : int, default=0
        Progress bar of the :class:`RSMaximin` an int or a fraction creates; a
        selector object keeps its own setting.

    Returns
    -------
    indices : ndarray of int
    """
    if isinstance(references, str):  # "all", the only string the constraint admits
        return unique_row_indices(X)
    if isinstance(references, Real):
        return RSMaximin(references, verbose=verbose).fit(X).indices_
    selector = clone(references).fit(X)
    indices = getattr(selector, "indices_", None)
    if indices is None:
        raise TypeError(
            f"references={references!r} must set `indices_` when fitted, like RSMaximin "
            "and RandomReferences do"
        )
    return np.asarray(indices, dtype=np.intp)
