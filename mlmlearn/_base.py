"""What every distance-based regressor shares: references and their distances."""

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ._distances import euclidean_distances, row_chunks
from ._inputs import reject_structures
from .references import select_references

__all__ = ["DistanceRegressor"]


class DistanceRegressor(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Base of EMLM and MLM: validation, reference selection, chunked prediction.

    Subclasses implement ``_fit(D, Y, indices)`` on the training distances ``D``
    (N×K) and 2-D targets ``Y``, and ``_predict(D)`` returning 2-D predictions.
    They have a ``verbose`` parameter, passed to :class:`~mlmlearn.RSMaximin`
    when ``references`` is a count or a fraction.
    """

    def fit(self, X, y):
        """Fit the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs (descriptors).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.

        Returns
        -------
        self

        Raises
        ------
        TypeError
            If ``X`` holds structures or atomic environments instead of
            descriptor rows (a descriptor such as ``mlmlearn.atoms.SOAP`` must
            come first in a pipeline).
        """
        self._validate_params()
        reject_structures(X, type(self).__name__)
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        Y = y.reshape(X.shape[0], -1)
        indices = select_references(self.references, X, verbose=self.verbose)
        self.reference_indices_ = indices
        self.references_ = X[indices]
        self._references_sq = np.einsum("ij,ij->i", self.references_, self.references_)
        self._fit(euclidean_distances(X, self.references_, Y_norm_squared=self._references_sq),
                  Y, indices)
        self._y_ndim = y.ndim
        return self

    def predict(self, X):
        """Predict targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)

        Raises
        ------
        TypeError
            If ``X`` holds structures instead of descriptor rows.
        """
        check_is_fitted(self)
        reject_structures(X, type(self).__name__)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        k = self.references_.shape[0]
        # row blocks sized by working_memory (row_chunks copes with 1 row and tiny budgets)
        parts = [
            self._predict(euclidean_distances(X[rows], self.references_,
                                              Y_norm_squared=self._references_sq))
            for rows in row_chunks(X.shape[0], 8 * 4 * k)
        ]
        Y = np.concatenate(parts) if parts else np.empty((0, self.n_outputs_))
        return Y[:, 0] if self._y_ndim == 1 else Y

    @property
    def n_references_(self):
        """Number of references used (distinct training samples)."""
        return self.references_.shape[0]
