"""Kernels of RS-maximin selection: one pair formula, and exact pruning by lower bounds.

RS-maximin (thesis section 3.3) keeps, for every sample, its squared distance
to the nearest reference chosen so far and updates it with every new
reference. Done plainly, each update reads the whole N×d matrix. Two things
here make it fast without changing a single chosen index:

1. **One pair formula.** Every squared distance, wherever it is computed, is
   :func:`squared_distances`' fixed-order sum: the squares ``(x_i - q_i)²`` of
   the ``d`` differences, zero-padded to the next power of two ``L``, summed by
   halving (``v[:h] + v[h:2h]`` for ``h = L/2, L/4, …, 1``). Elementwise IEEE
   operations only, so the compiled kernel (numba, when installed) and the
   numpy one give the same bits for a pair whatever rows are computed with it,
   and its relative error is at most ``(log2 L + 3)·u`` (``u`` the unit
   roundoff): every term is non-negative.
2. **Lower bounds that skip rows.** With an orthonormal ``P`` (d×p, p ≪ d, the
   leading principal directions of a subsample), ``y = Pᵀ(x - μ)`` and the
   residual norm ``ρ = ||(I - PPᵀ)(x - μ)||``,
   ``||x - r||² = ||Pᵀ(x - r)||² + ||(I - PPᵀ)(x - r)||² ≥ ||y_x - y_r||² + (ρ_x - ρ_r)²``
   (reverse triangle inequality on the residuals). A row whose bound, less a
   rounding margin derived below, reaches its current minimum distance cannot
   get nearer to the new reference (the plain loop lowers a minimum only on a
   strictly smaller distance), so its distance is not computed; the running
   minima — and hence every argmax — are those of the plain loop. The bound of
   the first ``m = ceil(p/4)`` directions (with its own residual) is tried on
   every row, the bound of all ``p`` on the rows it leaves.

Rounding margin of the bound (first order in ``u``, then doubled). With ``Q``
the exact orthonormal matrix nearest the computed ``P`` (``||P - Q||₂ ≤ η``,
``η`` bounded by ``||PᵀP - I||_F`` plus its own rounding, as ``|σ - 1| ≤ |σ² - 1|``
for every singular value σ of ``P``), ``c = x - μ`` its
centred row and ``ĉ`` the rounded one: the computed ``ŷ`` differs from ``Qᵀc``
by at most ``e_y = (γ_d·√p·(1 + η) + η + u)·||ĉ||`` (a matrix product, any
summation order); the computed ``ρ̂² = max(||ĉ||² - ||ŷ||², 0)`` differs from
the exact ``ρ²`` by at most ``ε·||ĉ||²`` with ``ε = γ_d + γ_p + 3u + 2e_y/||ĉ||``,
hence ``|ρ̂ - ρ| ≤ √ε·||ĉ||``. So ``||(ŷ_x - ŷ_r, ρ̂_x - ρ̂_r)||`` exceeds the
exact bound by at most ``E_x + E_r`` with ``E = 2·(e_y/||ĉ|| + √ε + 2u)·||ĉ||``.
A row is skipped when ``Ŝ > (m + E_x + E_r)²·(1 + κ)/(1 - κ)``, ``Ŝ`` the
computed squared bound, ``m`` its current minimum distance; ``κ`` covers the
relative error of ``Ŝ`` (``γ_{p+3}``), of the pair formula and of the few
operations of the test. Then the exact distance is at least ``m`` and the
computed one at least the current minimum: the plain loop would not have
changed that row either. Any overflow or NaN in a bound fails the test, so
such rows are computed.
"""

import types
from math import sqrt
from typing import NamedTuple

import numpy as np

from ._distances import row_chunks
from ._optional import compile_once

__all__ = ["Bounds", "projection_bounds", "pruned_update", "squared_distances"]

_U = np.finfo(np.float64).eps / 2  # unit roundoff
_BLOCK_MIB = 2  # temporaries of the numpy row loops: a few MiB, reused from cache


def _padded_length(d):
    """Next power of two ``>= d`` (``d >= 1``): the length the pair formula sums over."""
    return 1 << (int(d) - 1).bit_length()


# --- the pair formula, numpy ----------------------------------------------------------------


def _squared_numpy(X, q, rows, out):
    """The pair formula of the module docstring, in numpy (row blocks)."""
    d = X.shape[1]
    L = _padded_length(d)
    for block in row_chunks(rows.size, 8 * L, working_memory=_BLOCK_MIB):
        idx = rows[block]
        buf = np.zeros((idx.size, L))
        v = buf[:, :d]
        np.subtract(X[idx], q, out=v)
        np.multiply(v, v, out=v)
        h = L // 2
        while h >= 1:
            np.add(buf[:, :h], buf[:, h : 2 * h], out=buf[:, :h])
            h //= 2
        out[block] = buf[:, 0]
    return out


# --- the same formula and the pruned update, compiled by numba --------------------------------


def _pair_py(x, q, buf):  # pragma: no cover - compiled by numba
    """``||x - q||²`` by the module's pair formula; ``buf`` holds ``L/2`` floats."""
    d = x.shape[0]
    if d == 1:
        t = x[0] - q[0]
        return t * t
    h = buf.shape[0]  # L / 2 < d <= L
    for i in range(d - h):
        a = x[i] - q[i]
        b = x[i + h] - q[i + h]
        buf[i] = a * a + b * b
    for i in range(d - h, h):
        a = x[i] - q[i]
        buf[i] = a * a
    h //= 2
    while h >= 1:
        for i in range(h):
            buf[i] = buf[i] + buf[i + h]
        h //= 2
    return buf[0]


_pair = _pair_py  # the compiled kernels see the compiled pair routine under this name


def _squared_rows_py(X, q, rows, out, buf):  # pragma: no cover - compiled by numba
    for k in range(rows.shape[0]):
        out[k] = _pair(X[rows[k]], q, buf)


def _pruned_update_py(X, head, head_rho, Y, rho, E, mind2, mind, q, factor, s, cand,
                      buf):  # pragma: no cover - compiled by numba
    """One reference's update of the running minima, skipping rows its bounds rule out."""
    m, n = head.shape
    p = Y.shape[1]
    eq = E[q]
    # stage 1, every row: the bound of the first m coordinates and their residual
    rq = head_rho[q]
    for i in range(n):
        t = head_rho[i] - rq
        s[i] = t * t
    for k in range(m):
        yk = head[k, q]
        row = head[k]
        for i in range(n):
            t = row[i] - yk
            s[i] += t * t
    c = 0
    for i in range(n):
        if mind[i] == 0.0:  # a reference or a duplicate of one: nothing is nearer
            continue
        b = mind[i] + E[i] + eq
        if not s[i] > b * b * factor:  # NaN or overflow: keep
            cand[c] = i
            c += 1
    # stage 2, the rows left: the bound of all p coordinates and their residual
    yq = Y[q]
    rq = rho[q]
    kept = 0
    for j in range(c):
        i = cand[j]
        t = rho[i] - rq
        s2 = t * t
        for k in range(p):
            t = Y[i, k] - yq[k]
            s2 += t * t
        b = mind[i] + E[i] + eq
        if not s2 > b * b * factor:
            cand[kept] = i
            kept += 1
    # the distances no bound ruled out, by the pair formula
    xq = X[q]
    for j in range(kept):
        i = cand[j]
        d2 = _pair(X[i], xq, buf)
        if d2 < mind2[i]:
            mind2[i] = d2
            mind[i] = sqrt(d2)
    return kept


def _kernels():
    """The compiled kernels (numba's on-disk cache), or None without numba."""
    return _compile()


@compile_once
def _compile():
    try:
        import numba
    except ImportError:
        return None
    jit = numba.njit(cache=True, nogil=True)  # no fastmath: the pair formula is fixed
    pair = jit(_pair_py)
    return types.MappingProxyType({
        "pair": pair,
        "squared_rows": jit(_with_globals(_squared_rows_py, _pair=pair)),
        "pruned_update": jit(_with_globals(_pruned_update_py, _pair=pair)),
    })


def _with_globals(function, **replaced):
    """A copy of ``function`` whose globals name the compiled routines it calls."""
    copy = types.FunctionType(function.__code__, {**function.__globals__, **replaced},
                              function.__name__, function.__defaults__, function.__closure__)
    copy.__qualname__ = function.__qualname__
    return copy


# --- public entry points ------------------------------------------------------------------


def squared_distances(X, q, rows=None, *, compiled=True):
    """Squared distances ``||X[rows] - q||²`` by the one pair formula (module docstring).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float64, C-contiguous
    q : ndarray of shape (n_features,), float64
    rows : ndarray of int, default=None
        Rows of ``X`` to use; default all.
    compiled : bool, default=True
        Use the numba kernel when numba is installed; ``False`` forces numpy.
        Both give the same bits.

    Returns
    -------
    d2 : ndarray of shape (len(rows),)
        Relative error at most ``(log2 L + 3)·u`` per entry (``L`` the padded
        length), exactly 0 for identical rows.
    """
    rows = np.arange(X.shape[0]) if rows is None else np.asarray(rows, dtype=np.intp)
    q = np.ascontiguousarray(q, dtype=np.float64)
    out = np.empty(rows.size)
    kernels = _kernels() if compiled else None
    if kernels is None:
        return _squared_numpy(X, q, rows, out)
    buf = np.empty(max(_padded_length(X.shape[1]) // 2, 1))
    kernels["squared_rows"](X, q, rows, out, buf)
    return out


def _principal_directions(X, mean, p, seed=0):
    """Orthonormal d×p basis near the leading principal directions of a row subsample.

    A randomized subspace iteration (two passes) on about 1 000–2 000 evenly
    spaced rows, then the right singular vectors of the projected subsample; any
    orthonormal basis keeps the bounds exact, a good one prunes more (on Au25
    SOAP, more rows or passes gave no fewer computed distances). Only small
    factorizations (subsample rows × (p + 8)) are needed.
    """
    n, d = X.shape
    S = X[:: max(1, n // 1024)] - mean
    rng = np.random.default_rng(seed)
    Z = S @ rng.standard_normal((d, min(p + 8, d)))
    for _ in range(2):
        Z = np.linalg.qr(Z)[0]
        Z = S @ (S.T @ Z)
    Z = np.linalg.qr(Z)[0]
    vt = np.linalg.svd(Z.T @ S, full_matrices=False)[2]  # orthonormal rows, leading first
    if vt.shape[0] < p:  # fewer subsample rows than directions: complete the basis
        vt = np.linalg.qr(np.vstack([vt, rng.standard_normal((p - vt.shape[0], d))]).T)[0].T
    return np.ascontiguousarray(vt[:p].T)


class Bounds(NamedTuple):
    """Per-row data of the lower bounds (:func:`projection_bounds`)."""

    head: np.ndarray  # (m, n): the first m projected coordinates, transposed
    head_rho: np.ndarray  # (n,): residual norms outside those m directions
    Y: np.ndarray  # (n, p): all p projected coordinates
    rho: np.ndarray  # (n,): residual norms outside the p directions
    E: np.ndarray  # (n,): rounding margin of each row's coordinates and residuals


def projection_bounds(X, mean, p, *, seed=0):
    """Projected coordinates, residual norms and rounding margins of every row.

    Two bounds share one basis: a cheap one from its first ``m = ceil(p/4)``
    directions, tried on every row, and the full one, tried on the rows the
    first leaves. The margin ``E`` derived for ``p`` directions holds for any
    leading subset of them (its terms grow with the number of directions).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float64
    mean : ndarray of shape (n_features,)
    p : int
        Dimension of the projection, ``1 <= p <= n_features``.
    seed : int, default=0
        Seed of the randomized basis (the selection never depends on it).

    Returns
    -------
    bounds : Bounds
        ``Y = (X - mean) P`` with ``P`` the d×p orthonormal basis, the residual
        norms ``||(I - PPᵀ)(x - μ)||``, the same for the first ``m`` columns, and
        the margins ``E`` (module docstring).
    """
    n, d = X.shape
    m = -(-p // 4)
    P = _principal_directions(X, mean, p, seed)
    G = P.T @ P
    G[np.diag_indices(p)] -= 1.0
    eta = float(np.linalg.norm(G)) + 2 * p * (d + 1) * _U
    gamma_d = d * _U / (1 - d * _U)
    gamma_p = p * _U / (1 - p * _U)
    e_y = gamma_d * sqrt(p) * (1 + eta) + eta + _U  # per unit ||ĉ||
    eps = gamma_d + gamma_p + 3 * _U + 2 * e_y
    tau = 2 * (e_y + sqrt(eps) + 2 * _U)
    Y = np.empty((n, p))
    rho = np.empty(n)
    head_rho = np.empty(n)
    cn = np.empty(n)
    for rows in row_chunks(n, 8 * (d + p), working_memory=_BLOCK_MIB):  # cache-sized blocks
        C = X[rows] - mean
        Yb = np.matmul(C, P, out=Y[rows])
        c2 = np.einsum("ij,ij->i", C, C)
        cn[rows] = np.sqrt(c2)
        rho[rows] = np.sqrt(np.maximum(c2 - np.einsum("ij,ij->i", Yb, Yb), 0.0))
        head_rho[rows] = np.sqrt(np.maximum(c2 - np.einsum("ij,ij->i", Yb[:, :m], Yb[:, :m]),
                                            0.0))
    return Bounds(np.ascontiguousarray(Y[:, :m].T), head_rho, Y, rho, tau * cn)


def _test_factor(p, d):
    """``(1 + κ)/(1 - κ)`` of the skip test (module docstring), ``κ`` generous."""
    kappa = 4 * (p + 3 + _padded_length(d).bit_length() + 16) * _U
    return (1 + kappa) / (1 - kappa)


def pruned_update(X, bounds, mind2, mind, q, *, compiled=True):
    """Lower the running minima with reference row ``q``, skipping rows proven unaffected.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float64, C-contiguous
    bounds : Bounds
        From :func:`projection_bounds`.
    mind2 : ndarray of shape (n_samples,)
        Running squared minimum distances, updated in place exactly as the plain
        ``np.minimum(mind2, squared_distances(X, X[q]))`` would.
    mind : ndarray of shape (n_samples,)
        ``sqrt(mind2)``, kept in step (used by the bounds only).
    q : int
        Row of the new reference.
    compiled : bool, default=True
        Use numba when installed; ``False`` forces numpy (same result).

    Returns
    -------
    n_computed : int
        How many distances were computed.
    """
    head, head_rho, Y, rho, E = bounds
    n, p = Y.shape
    factor = _test_factor(p, X.shape[1])
    kernels = _kernels() if compiled else None
    if kernels is not None:
        s = np.empty(n)
        cand = np.empty(n, dtype=np.intp)
        buf = np.empty(max(_padded_length(X.shape[1]) // 2, 1))
        return kernels["pruned_update"](X, head, head_rho, Y, rho, E, mind2, mind, int(q),
                                        factor, s, cand, buf)
    s = (head_rho - head_rho[q]) ** 2
    s += ((head - head[:, q : q + 1]) ** 2).sum(axis=0)
    b = mind + E + E[q]
    cand = np.flatnonzero(~(s > b * b * factor) & (mind != 0.0))
    s = (rho[cand] - rho[q]) ** 2 + ((Y[cand] - Y[q]) ** 2).sum(axis=1)
    b = b[cand]
    cand = cand[~(s > b * b * factor)]
    d2 = squared_distances(X, X[q], cand, compiled=False)
    closer = d2 < mind2[cand]
    moved = cand[closer]
    mind2[moved] = d2[closer]
    mind[moved] = np.sqrt(d2[closer])
    return cand.size
