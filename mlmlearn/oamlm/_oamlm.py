"""The orientation adaptive minimal learning machine (thesis 2.3, paper III, paper IV II B).

Work in progress for the OAMLM issue: analytic loss (2.30)–(2.32) and the
permutation alignment; the numeric loss, Huber training, the exact sphere
minimiser and the gold-thiolate rules are still to come.
"""

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted

from .._distances import euclidean_distances
from .._linalg import solve_distance_regression
from ..references import select_references
from ._alignment import PermutationAlignment
from ._losses import analytic_direction, sphere_direction

__all__ = ["OAMLM"]


class OAMLM(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Unit force directions of atomic environments from invariant descriptors.

    Parameters
    ----------
    descriptor : transformer
        Maps :class:`~mlmlearn.atoms.AtomicEnvironments` to feature rows, e.g.
        ``make_pipeline(SOAP(...), MinMaxScaler())``. Cloned at fit.
    alignment : Alignment, default=None
        Defaults to ``PermutationAlignment(4)`` (paper III).
    references : int, float, "all" or selector, default=100
        Reference environments (RS-maximin on the descriptors for int/float).
    loss : {"analytic", "sphere"}, default="analytic"
        "analytic" is eq. (2.32) as published, normalised; "sphere" the exact
        minimiser of eq. (2.30) over unit vectors.
    sigma2 : float, default=0.5
        σ₂ of the weights ω = exp(−(g/σ₂)²), eq. (2.31), in Å.
    beta : float, default=1e-8
        Ridge term of the distance regressions (2.20) for B_c and B_g.

    Attributes
    ----------
    descriptor_, references_ (descriptor rows Q), reference_neighbourhoods_ (S),
    reference_directions_ (T), coef_c_, coef_g_ (B_c, B_g)
    """

    def __init__(
        self, descriptor, *, alignment=None, references=100, loss="analytic", sigma2=0.5, beta=1e-8
    ):
        self.descriptor = descriptor
        self.alignment = alignment
        self.references = references
        self.loss = loss
        self.sigma2 = sigma2
        self.beta = beta

    def _alignment(self):
        return PermutationAlignment(4) if self.alignment is None else self.alignment

    def fit(self, X, y):
        y = np.asarray(y, dtype=float)
        if y.ndim != 2 or y.shape != (len(X), 3):
            raise ValueError(f"y must be the (n_environments, 3) forces; got shape {y.shape}")
        norms = np.linalg.norm(y, axis=1)
        if not np.all(np.isfinite(y)) or np.any(norms == 0):
            raise ValueError("y must be finite, non-zero force vectors")
        unit = y / norms[:, None]
        self.descriptor_ = clone(self.descriptor).fit(X)
        F = np.asarray(self.descriptor_.transform(X), dtype=float)
        idx = select_references(self.references, F)
        self.reference_indices_ = idx
        self.references_ = F[idx]
        alignment = self._alignment()
        P = alignment.neighbourhoods(X)
        self.reference_neighbourhoods_ = P[idx]
        self.reference_directions_ = unit[idx]
        R, g = alignment.align(P, self.reference_neighbourhoods_)
        rotated = np.einsum("nkij,kj->nki", R, self.reference_directions_)
        D_c = np.einsum("nki,ni->nk", rotated, unit)  # y_i · (R_ij t_j)
        D_in = euclidean_distances(F, self.references_)
        self.coef_c_ = solve_distance_regression(D_in, D_c, self.beta)
        self.coef_g_ = solve_distance_regression(D_in, g, self.beta)
        self.alignment_ = alignment
        return self

    def predict(self, X, *, return_alignment=False):
        check_is_fitted(self, "coef_c_")
        F = np.asarray(self.descriptor_.transform(X), dtype=float)
        D_in = euclidean_distances(F, self.references_)
        d_c = D_in @ self.coef_c_
        P = self.alignment_.neighbourhoods(X)
        R, g = self.alignment_.align(P, self.reference_neighbourhoods_)
        rotated = np.einsum("nkij,kj->nki", R, self.reference_directions_)
        omega = np.exp(-((g / self.sigma2) ** 2))  # (2.31)
        if self.loss == "analytic":
            v = analytic_direction(omega, d_c, rotated)
        elif self.loss == "sphere":
            v = sphere_direction(omega, d_c, rotated)
        else:
            raise ValueError(f"loss={self.loss!r} must be 'analytic' or 'sphere'")
        if return_alignment:
            return v, g
        return v
