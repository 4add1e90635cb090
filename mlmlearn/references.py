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
    The selection is deterministic (ties go to the lowest index).

    The running minimum distance of every sample to the chosen set is updated
    incrementally, O(N·K·d) at worst and no N×K matrix in memory. Samples are
    grouped by their nearest reference; a group is skipped when the triangle
    inequality proves that the new reference cannot be nearer to any of its
    members (``d(q, c) >= 2 · radius(c)``), which makes the later steps cheap.

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


def rs_maximin(X, n_references, *, verbose=0):
    """Farthest-point selection; see :class:`RSMaximin`.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float64
    n_references : int
    verbose : int, default=0

    Returns
    -------
    indices : ndarray of int
        At most ``n_references`` rows (fewer if there are fewer distinct rows).
    min_distances : ndarray of shape (n_samples,)
    """
    n = X.shape[0]
    xx = np.einsum("ij,ij->i", X, X)
    mean = X.mean(axis=0, keepdims=True)
    first = int(np.argmin(euclidean_distances(X, mean, X_norm_squared=xx)[:, 0]))
    chosen = np.empty(n_references, dtype=np.intp)
    chosen[0] = first
    mind = euclidean_distances(X, X[first : first + 1], X_norm_squared=xx)[:, 0]
    owner = np.zeros(n, dtype=np.intp)  # position in `chosen` of each sample's nearest reference
    radius = np.zeros(n_references)  # largest min-distance among the samples each reference owns
    radius[0] = mind.max()
    count = 1
    for j in progress(range(1, n_references), verbose=verbose, total=n_references - 1,
                      desc="RS-maximin"):
        nxt = int(np.argmax(mind))
        if mind[nxt] == 0.0:  # every remaining sample duplicates a reference
            break
        chosen[j] = nxt
        count = j + 1
        q = X[nxt : nxt + 1]
        qq = xx[nxt : nxt + 1]
        # references whose groups may hold samples nearer to q than to them
        dc = euclidean_distances(X[chosen[:j]], q, X_norm_squared=xx[chosen[:j]],
                                 Y_norm_squared=qq)[:, 0]
        candidate = dc < 2.0 * radius[:j] * (1.0 + 1e-9)
        idx = np.flatnonzero(candidate[owner])
        dq = euclidean_distances(X[idx], q, X_norm_squared=xx[idx], Y_norm_squared=qq)[:, 0]
        closer = dq < mind[idx]
        moved = idx[closer]
        mind[moved] = dq[closer]
        owner[moved] = j
        touched = np.flatnonzero(candidate)
        radius[touched] = 0.0
        radius[j] = 0.0
        np.maximum.at(radius, owner[idx], mind[idx])
    return chosen[:count].copy(), mind


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
