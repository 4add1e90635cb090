"""The one Euclidean distance kernel every mlmlearn model uses.

Distances between samples and references are the "kernel space" of the whole
Minimal Learning Machine family (thesis section 2.3): ``D[i, k] = ||x_i - q_k||``.
They are computed with the BLAS expansion ``||x||² - 2 x·q + ||q||²`` in row
blocks sized by ``sklearn.get_config()["working_memory"]``, and the entries where
that expansion loses its relative accuracy (near-coincident points, where the
three terms cancel) are recomputed directly from the difference vectors, so
that the distance of a point to an identical copy is exactly ``0.0``. Empty
inputs, single rows and budgets smaller than one row are all valid.
"""

import operator

import numpy as np
from sklearn import get_config

__all__ = ["euclidean_distances", "row_chunks"]

# Entries with d² below this fraction of ||x||² + ||q||² are recomputed from the
# differences. Error bound (p features, ε machine epsilon, any BLAS summation
# order): the expansion gives |d̂² - d²| ≤ (p + 2)·ε·(||x||² + ||q||²) — the dot
# product and both norms γ_p each, two additions — so an entry kept from it
# (d̂² above the threshold) has a relative error in d below (p + 2)·ε / (2·1e-8),
# about (p + 2)·5.6e-9 at worst and typically √p times less. A recomputed entry
# has a relative error below (p/2 + 3)·ε, and identical rows give exactly 0.
# Different row blocks (working_memory) agree within these bounds, not bitwise:
# BLAS rounds a product differently for different block shapes.
_RECOMPUTE_RTOL = 1e-8


def row_chunks(n_rows, row_bytes, working_memory=None):
    """Slices of ``range(n_rows)`` whose temporaries fit in the working memory.

    Every row is covered exactly once, in order. Zero rows give no slices, and a
    budget smaller than one row still gives slices of one row, so callers need
    no special case for empty inputs, single rows or tiny budgets.

    Parameters
    ----------
    n_rows : int
        Number of rows to process, ``>= 0``.
    row_bytes : int
        Bytes of temporary memory one row needs (values below 1 count as 1).
    working_memory : float, default=None
        Budget in MiB; ``None`` takes ``sklearn.get_config()["working_memory"]``.

    Returns
    -------
    iterator of slice
        Contiguous, non-empty slices ``slice(start, stop)`` in increasing order.

    Raises
    ------
    ValueError
        If ``n_rows`` is negative.

    Examples
    --------
    >>> from mlmlearn._distances import row_chunks
    >>> list(row_chunks(5, 2**20, working_memory=2))
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    >>> list(row_chunks(0, 8))
    []
    """
    n_rows = operator.index(n_rows)
    if n_rows < 0:
        raise ValueError(f"row_chunks: n_rows={n_rows} must be >= 0")
    if working_memory is None:
        working_memory = get_config()["working_memory"]
    budget = float(working_memory) * 2**20 / max(int(row_bytes), 1)
    # at least one row per slice; a NaN or infinite budget means one block
    batch = max(1, n_rows if not budget < n_rows else int(budget))
    return (slice(start, min(start + batch, n_rows)) for start in range(0, n_rows, batch))


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
        ``D[i, k] = ||X[i] - Y[k]||``, exactly 0 for identical rows, within the
        error bound stated beside ``_RECOMPUTE_RTOL`` otherwise. Either count
        may be 0.

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
