"""The one Euclidean distance kernel every mlmlearn model uses.

Distances between samples and references are the "kernel space" of the whole
Minimal Learning Machine family (thesis section 2.3): ``D[i, k] = ||x_i - q_k||``.
They are computed with the BLAS expansion ``||x||² - 2 x·q + ||q||²`` in row
blocks sized by ``sklearn.get_config()["working_memory"]``, and the entries where
that expansion loses its relative accuracy (near-coincident points, where the
three terms cancel) are recomputed directly from the difference vectors, so
that the distance of a point to an identical copy is exactly ``0.0``.
"""

import numpy as np
from sklearn import get_config
from sklearn.utils import gen_batches

__all__ = ["euclidean_distances", "row_chunks"]

# Entries with d² below this fraction of ||x||² + ||q||² are recomputed exactly.
# The expansion's absolute error is a few ulps of ||x||² + ||q||²; with this
# threshold every entry kept from the expansion has a relative error in d² below
# about 1e-7 (in d about 5e-8).
_RECOMPUTE_RTOL = 1e-8


def row_chunks(n_rows, row_bytes, working_memory=None):
    """Slices of ``range(n_rows)`` whose temporaries fit in the working memory.

    Parameters
    ----------
    n_rows : int
        Number of rows to process.
    row_bytes : int
        Bytes of temporary memory one row needs.
    working_memory : float, default=None
        Budget in MiB; ``None`` takes ``sklearn.get_config()["working_memory"]``.

    Returns
    -------
    generator of slice
    """
    if working_memory is None:
        working_memory = get_config()["working_memory"]
    batch = max(1, int(working_memory * 2**20 // max(int(row_bytes), 1)))
    return gen_batches(n_rows, min(batch, max(n_rows, 1)))


def euclidean_distances(X, Y, *, X_norm_squared=None, Y_norm_squared=None, out=None):
    """Euclidean distances between the rows of ``X`` and the rows of ``Y``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float64
    Y : ndarray of shape (n_references, n_features), float64
    X_norm_squared : ndarray of shape (n_samples,), default=None
        Precomputed ``(X ** 2).sum(axis=1)``.
    Y_norm_squared : ndarray of shape (n_references,), default=None
        Precomputed ``(Y ** 2).sum(axis=1)``, to save work when the same
        references are used many times.
    out : ndarray of shape (n_samples, n_references), default=None
        Where to write the result.

    Returns
    -------
    D : ndarray of shape (n_samples, n_references)
        ``D[i, k] = ||X[i] - Y[k]||``, exactly 0 for identical rows.

    Examples
    --------
    >>> import numpy as np
    >>> from mlmlearn._distances import euclidean_distances
    >>> euclidean_distances(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[3.0, 4.0]]))
    array([[5.],
           [0.]])
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    n, m = X.shape[0], Y.shape[0]
    if out is None:
        out = np.empty((n, m), dtype=np.float64)
    if Y_norm_squared is None:
        Y_norm_squared = np.einsum("ij,ij->i", Y, Y)
    y_max = Y_norm_squared.max() if m else 0.0
    # per row: the output row plus one temporary row of the same size
    for rows in row_chunks(n, 16 * max(m, 1)):
        Xc = X[rows]
        if X_norm_squared is None:
            xx = np.einsum("ij,ij->i", Xc, Xc)
        else:
            xx = X_norm_squared[rows]
        d2 = out[rows]
        np.matmul(Xc, Y.T, out=d2)
        d2 *= -2.0
        d2 += xx[:, None]
        d2 += Y_norm_squared[None, :]
        # rows whose smallest d² clears the loosest threshold need no recheck
        loose = _RECOMPUTE_RTOL * (xx + y_max)
        rows_near = np.flatnonzero(d2.min(axis=1) <= loose) if m else []
        if len(rows_near):
            sub = d2[rows_near]
            scale = xx[rows_near, None] + Y_norm_squared[None, :]
            ii, kk = np.nonzero(sub <= _RECOMPUTE_RTOL * scale)
            d2[rows_near[ii], kk] = _exact_squared(Xc, Y, rows_near[ii], kk)
        np.maximum(d2, 0.0, out=d2)
        np.sqrt(d2, out=d2)
    return out


def _exact_squared(X, Y, ii, kk):
    """Squared distances of the pairs ``(X[ii], Y[kk])`` from their differences."""
    result = np.empty(ii.size)
    for sl in row_chunks(ii.size, 16 * max(X.shape[1], 1)):
        diff = X[ii[sl]] - Y[kk[sl]]
        result[sl] = np.einsum("ij,ij->i", diff, diff)
    return result
