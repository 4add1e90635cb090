"""Batched optimal superposition of small point sets (the alignment core of the OAMLM).

For pairs of point sets ``X`` (to be rotated) and ``Y`` (target), already
centred on the atom whose force is predicted, find the proper rotation R
minimising Σ_k |R x_k − y_k|² (thesis eq. 2.24, paper IV eqs. 9–11).

* :func:`kabsch` — the SVD method of Arun et al. with the reflection fixed
  (det R = +1); the clear version, kept as the oracle.
* :func:`qcp` — Horn's quaternion form solved as Theobald's quaternion
  characteristic polynomial: the largest eigenvalue of a 4×4 symmetric
  matrix by Newton's method on its quartic, the quaternion from the adjugate.
  Compiled with numba (mlmlearn's ``atoms`` extra).

The compiled routines come from :func:`kernels`: one compile step (or load from
numba's on-disk cache), guarded by a lock and cached, so threads that align at
the same time on a cold start all get the same compiled objects. The pure-Python
routines (``_rotation_py``, ``_superpose_py``, ``_all_py``) stay importable as the
oracles of the compiled ones; nothing rebinds module globals.
"""

import functools
import threading
import types

import numpy as np

from .._optional import import_optional

__all__ = ["kabsch", "qcp", "best_alignments", "kernels"]


def _check_pairs(X, Y):
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if X.ndim == 2:
        X, Y = X[None], Y[None]
    if X.ndim != 3 or X.shape != Y.shape or X.shape[-1] != 3:
        raise ValueError(
            f"X and Y must both have shape (n_pairs, n_points, 3); got {X.shape} and {Y.shape}"
        )
    return X, Y


def kabsch(X, Y):
    """Rotations by SVD (Arun et al.), reflection-corrected.

    Parameters
    ----------
    X, Y : array-like of shape (n_pairs, n_points, 3)
        Centred point sets (Å); ``X`` is rotated onto ``Y``.

    Returns
    -------
    R : ndarray of shape (n_pairs, 3, 3)
        Proper rotations (det = +1) with ``X @ R.T`` ≈ ``Y``.
    rmsd : ndarray of shape (n_pairs,)
        Root-mean-square deviation after superposition (Å).
    """
    X, Y = _check_pairs(X, Y)
    H = np.einsum("bki,bkj->bij", X, Y)
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.matmul(Vt.transpose(0, 2, 1), U.transpose(0, 2, 1))))
    d[d == 0] = 1.0
    D = np.zeros_like(H)
    D[:, 0, 0] = D[:, 1, 1] = 1.0
    D[:, 2, 2] = d
    R = Vt.transpose(0, 2, 1) @ D @ U.transpose(0, 2, 1)
    residual = np.einsum("bkj,bij->bki", X, R) - Y
    return R, np.sqrt((residual**2).sum(axis=(1, 2)) / X.shape[1])


def qcp(X, Y, *, tol=1e-12, max_newton=50):
    """Rotations by the quaternion characteristic polynomial (Theobald 2005).

    Same contract as :func:`kabsch`. Newton's method runs from the upper
    bound (G_X + G_Y)/2 to the largest eigenvalue λ of Horn's key matrix
    until the step is below ``tol`` · λ; the RMSD is that of the rotation found.
    Compiled with numba; one pair per loop iteration, no allocation inside the
    loop. Pairs whose largest eigenvalue is multiple (collinear or otherwise
    degenerate sets, where the quaternion is not unique) are solved by SVD
    inside the same loop.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(1000, 4, 3)); X -= X.mean(1, keepdims=True)
    >>> R0, _ = kabsch(rng.normal(size=(1000, 3, 3)), rng.normal(size=(1000, 3, 3)))
    >>> R, rmsd = qcp(X, X @ R0.transpose(0, 2, 1))
    >>> bool(np.allclose(R, R0, atol=1e-8)), bool(rmsd.max() < 1e-6)
    (True, True)
    """
    X, Y = _check_pairs(X, Y)
    R = np.empty((X.shape[0], 3, 3))
    rmsd = np.empty(X.shape[0])
    X, Y = np.ascontiguousarray(X), np.ascontiguousarray(Y)
    kernels()["pairs"](X, Y, float(tol), int(max_newton), R, rmsd)
    return R, rmsd


def best_alignments(P, S, orders, *, rss=False, tol=1e-12, max_newton=50):
    """Align every input with every reference under each ordering; keep the best.

    The fused kernel behind :meth:`mlmlearn.oamlm.Alignment.align`: for input
    ``i``, reference ``j`` and ordering ``o`` the reference points
    ``S[j, orders[o]]`` are superposed on ``P[i]`` by QCP and scored by the
    alignment accuracy of eq. (2.25) (mean distance, ``rss=False``) or
    eq. (2.26) (root of the summed squares over the number of points,
    ``rss=True``); the ordering with the smallest accuracy wins.

    Parameters
    ----------
    P : ndarray of shape (n_inputs, n_points, 3)
    S : ndarray of shape (n_references, n_points, 3)
    orders : ndarray of int of shape (n_orderings, n_points)
        Row permutations of the reference points.

    Returns
    -------
    R : ndarray of shape (n_inputs, n_references, 3, 3)
        Rotations taking reference coordinates into the input's frame.
    g : ndarray of shape (n_inputs, n_references)
        The best accuracy (Å).
    best : ndarray of int of shape (n_inputs, n_references)
        Index of the winning ordering.
    """
    P = np.ascontiguousarray(P, dtype=float)
    S = np.ascontiguousarray(S, dtype=float)
    orders = np.ascontiguousarray(orders, dtype=np.int64)
    n, k = len(P), len(S)
    R = np.empty((n, k, 3, 3))
    g = np.empty((n, k))
    best = np.empty((n, k), dtype=np.int64)
    kernels()["all"](P, S, orders, bool(rss), float(tol), int(max_newton), R, g, best)
    return R, g, best


_COMPILE_LOCK = threading.Lock()


def kernels():
    """The compiled routines, compiled (or loaded from numba's cache) once per process.

    Thread-safe: concurrent first calls wait for one compile step and get the
    same objects.

    Returns
    -------
    kernels : mapping
        ``"rotation"`` — the single-pair routine ``(x, y, order, first, tol,
        max_newton, R)`` that writes the rotation of ``x[order[first:]]`` onto
        ``y[first:]``, for other compiled kernels (the gold-thiolate core rule);
        ``"superpose"`` — the same over all points, returning Σ|R x − y|²;
        ``"pairs"`` — the loop of :func:`qcp`; ``"all"`` — the loop of
        :func:`best_alignments`.

    Raises
    ------
    ModuleNotFoundError
        Without numba, naming the extra that installs it.
    """
    with _COMPILE_LOCK:
        return _compile()


@functools.cache
def _compile():
    numba = import_optional("numba", purpose="the OAMLM alignment kernels")
    jit = numba.njit(cache=True, nogil=True)
    rotation = jit(_rotation_py)
    superpose = jit(with_globals(_superpose_py, _rotation=rotation))
    return types.MappingProxyType(
        {
            "rotation": rotation,
            "superpose": superpose,
            "pairs": jit(with_globals(_pairs_py, _superpose=superpose)),
            "all": jit(with_globals(_all_py, _rotation=rotation)),
        }
    )


def with_globals(function, **replaced):
    """A copy of ``function`` that sees ``replaced`` instead of some module globals.

    numba freezes the globals a function reads when it compiles it; handing it a
    copy whose globals name the compiled routines links compiled to compiled,
    while the module keeps its pure-Python versions. (numba's on-disk cache keys
    on this file: a change to a routine of another file that a cached kernel
    calls needs that cache cleared, ``__pycache__/*.nbi``.)
    """
    copy = types.FunctionType(
        function.__code__,
        {**function.__globals__, **replaced},
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    copy.__qualname__ = function.__qualname__
    copy.__doc__ = function.__doc__
    return copy


def _pairs_py(X, Y, tol, max_newton, R, rmsd):  # pragma: no cover - compiled by numba
    n_points = X.shape[1]
    order = np.arange(n_points)
    for b in range(X.shape[0]):
        msd = _superpose(X[b], Y[b], order, tol, max_newton, R[b])
        rmsd[b] = np.sqrt(msd / n_points)


def _all_py(P, S, orders, rss, tol, max_newton, R, g, best):  # pragma: no cover - numba
    n_points = P.shape[1]
    # a row that is the origin in every input and every ordered reference (the
    # centre atom) adds exact zeros to every sum below: it is skipped, which
    # changes no result, not even in the last bit
    first = 1
    for o in range(orders.shape[0]):
        if orders[o, 0] != 0:
            first = 0
    for i in range(P.shape[0]):
        for a in range(3):
            if P[i, 0, a] != 0.0:
                first = 0
    for j in range(S.shape[0]):
        for a in range(3):
            if S[j, 0, a] != 0.0:
                first = 0
    R_try = np.empty((3, 3))
    for i in range(P.shape[0]):
        y = P[i]
        for j in range(S.shape[0]):
            x = S[j]
            g_best = np.inf
            for o in range(orders.shape[0]):
                order = orders[o]
                _rotation(x, y, order, first, tol, max_newton, R_try)
                # the residuals of the rotation: eq. (2.26) or eq. (2.25)
                acc = 0.0
                for m in range(first, n_points):
                    xm = x[order[m]]
                    if rss:
                        for a in range(3):
                            d = R_try[a, 0] * xm[0] + R_try[a, 1] * xm[1] + R_try[a, 2] * xm[2]
                            d -= y[m, a]
                            acc += d * d
                    else:
                        d2 = 0.0
                        for a in range(3):
                            d = R_try[a, 0] * xm[0] + R_try[a, 1] * xm[1] + R_try[a, 2] * xm[2]
                            d -= y[m, a]
                            d2 += d * d
                        acc += np.sqrt(d2)
                acc = np.sqrt(acc) / n_points if rss else acc / n_points
                if acc < g_best:
                    g_best = acc
                    best[i, j] = o
                    for a in range(3):
                        for c in range(3):
                            R[i, j, a, c] = R_try[a, c]
            g[i, j] = g_best


def _superpose_py(x, y, order, tol, max_newton, R):  # pragma: no cover - compiled by numba
    """Rotate the points x[order] onto y: writes R, returns Σ|R x − y|²."""
    _rotation(x, y, order, 0, tol, max_newton, R)
    # the residual of the rotation itself: exact even where λ is a double root
    msd = 0.0
    for k in range(y.shape[0]):
        xk = x[order[k]]
        for i in range(3):
            d = R[i, 0] * xk[0] + R[i, 1] * xk[1] + R[i, 2] * xk[2] - y[k, i]
            msd += d * d
    return msd


def _rotation_py(x, y, order, first, tol, max_newton, R):  # pragma: no cover - numba
    """Rotate the points x[order[first:]] onto y[first:] by QCP: writes R.

    Rows before ``first`` are left out of the sums (the caller passes 1 for
    a centre at the origin of both sets, whose terms are exact zeros).
    """
    n_points = y.shape[0]
    sxx = sxy = sxz = syx = syy = syz = szx = szy = szz = 0.0
    g = 0.0
    for k in range(first, n_points):
        xk = x[order[k]]
        x0, x1, x2 = xk[0], xk[1], xk[2]
        y0, y1, y2 = y[k, 0], y[k, 1], y[k, 2]
        sxx += x0 * y0
        sxy += x0 * y1
        sxz += x0 * y2
        syx += x1 * y0
        syy += x1 * y1
        syz += x1 * y2
        szx += x2 * y0
        szy += x2 * y1
        szz += x2 * y2
        g += x0 * x0 + x1 * x1 + x2 * x2 + y0 * y0 + y1 * y1 + y2 * y2
    g *= 0.5
    n00 = sxx + syy + szz
    n11 = sxx - syy - szz
    n22 = -sxx + syy - szz
    n33 = -sxx - syy + szz
    n01 = syz - szy
    n02 = szx - sxz
    n03 = sxy - syx
    n12 = sxy + syx
    n13 = szx + sxz
    n23 = syz + szy
    c2 = -2.0 * (
        sxx * sxx
        + sxy * sxy
        + sxz * sxz
        + syx * syx
        + syy * syy
        + syz * syz
        + szx * szx
        + szy * szy
        + szz * szz
    )
    c1 = -8.0 * (
        sxx * (syy * szz - syz * szy)
        - sxy * (syx * szz - syz * szx)
        + sxz * (syx * szy - syy * szx)
    )
    # det(N) by 2x2 minors of rows (0, 1) and (2, 3)
    s0 = n00 * n11 - n01 * n01
    s1 = n00 * n12 - n01 * n02
    s2 = n00 * n13 - n01 * n03
    s3 = n01 * n12 - n11 * n02
    s4 = n01 * n13 - n11 * n03
    s5 = n02 * n13 - n12 * n03
    k5 = n22 * n33 - n23 * n23
    k4 = n12 * n33 - n13 * n23
    k3 = n12 * n23 - n13 * n22
    k2 = n02 * n33 - n03 * n23
    k1 = n02 * n23 - n03 * n22
    k0 = n02 * n13 - n03 * n12
    c0 = s0 * k5 - s1 * k4 + s2 * k3 + s3 * k2 - s4 * k1 + s5 * k0
    lam = g
    for _ in range(max_newton):
        lam2 = lam * lam
        p = (lam2 + c2) * lam2 + c1 * lam + c0
        dp = 4.0 * lam2 * lam + 2.0 * c2 * lam + c1
        if dp == 0.0:
            break
        step = p / dp
        lam -= step
        if abs(step) <= tol * abs(lam):
            break
    # quaternion: the largest column of adj(A), A = N - lam I (symmetric), by
    # the 2x2-minor (Laplace) expansion of the 4x4 adjugate
    a00, a11, a22, a33 = n00 - lam, n11 - lam, n22 - lam, n33 - lam
    a01, a02, a03, a12, a13, a23 = n01, n02, n03, n12, n13, n23
    s0 = a00 * a11 - a01 * a01
    s1 = a00 * a12 - a01 * a02
    s2 = a00 * a13 - a01 * a03
    s3 = a01 * a12 - a11 * a02
    s4 = a01 * a13 - a11 * a03
    s5 = a02 * a13 - a12 * a03
    k5 = a22 * a33 - a23 * a23
    k4 = a12 * a33 - a13 * a23
    k3 = a12 * a23 - a13 * a22
    k2 = a02 * a33 - a03 * a23
    k1 = a02 * a23 - a03 * a22
    k0 = a02 * a13 - a03 * a12
    b00 = a11 * k5 - a12 * k4 + a13 * k3
    b10 = -a01 * k5 + a12 * k2 - a13 * k1
    b20 = a01 * k4 - a11 * k2 + a13 * k0
    b30 = -a01 * k3 + a11 * k1 - a12 * k0
    b11 = a00 * k5 - a02 * k2 + a03 * k1
    b21 = -a00 * k4 + a01 * k2 - a03 * k0
    b31 = a00 * k3 - a01 * k1 + a02 * k0
    b22 = a03 * s4 - a13 * s2 + a33 * s0
    b32 = -a03 * s3 + a13 * s1 - a23 * s0
    b33 = a02 * s3 - a12 * s1 + a22 * s0
    best, q0, q1, q2, q3 = b00 * b00 + b10 * b10 + b20 * b20 + b30 * b30, b00, b10, b20, b30
    norm = b10 * b10 + b11 * b11 + b21 * b21 + b31 * b31
    if norm > best:
        best, q0, q1, q2, q3 = norm, b10, b11, b21, b31
    norm = b20 * b20 + b21 * b21 + b22 * b22 + b32 * b32
    if norm > best:
        best, q0, q1, q2, q3 = norm, b20, b21, b22, b32
    norm = b30 * b30 + b31 * b31 + b32 * b32 + b33 * b33
    if norm > best:
        best, q0, q1, q2, q3 = norm, b30, b31, b32, b33
    if not best > 1e-20 * g**6:
        # a multiple largest eigenvalue (e.g. collinear sets): the quaternion is
        # not unique and adj(A) ~ 0; Kabsch by SVD instead
        H = np.empty((3, 3))
        H[0, 0], H[0, 1], H[0, 2] = sxx, sxy, sxz
        H[1, 0], H[1, 1], H[1, 2] = syx, syy, syz
        H[2, 0], H[2, 1], H[2, 2] = szx, szy, szz
        U, _, Vt = np.linalg.svd(H)
        V = Vt.T
        Ut = U.T
        R[:, :] = V @ Ut
        if np.linalg.det(R) < 0:
            V[:, 2] = -V[:, 2]
            R[:, :] = V @ Ut
    else:
        inv = 1.0 / np.sqrt(best)
        q0, q1, q2, q3 = q0 * inv, q1 * inv, q2 * inv, q3 * inv
        R[0, 0] = q0 * q0 + q1 * q1 - q2 * q2 - q3 * q3
        R[0, 1] = 2.0 * (q1 * q2 - q0 * q3)
        R[0, 2] = 2.0 * (q1 * q3 + q0 * q2)
        R[1, 0] = 2.0 * (q1 * q2 + q0 * q3)
        R[1, 1] = q0 * q0 - q1 * q1 + q2 * q2 - q3 * q3
        R[1, 2] = 2.0 * (q2 * q3 - q0 * q1)
        R[2, 0] = 2.0 * (q1 * q3 - q0 * q2)
        R[2, 1] = 2.0 * (q2 * q3 + q0 * q1)
        R[2, 2] = q0 * q0 - q1 * q1 - q2 * q2 + q3 * q3


# The loops call `_superpose` and `_rotation`: in pure Python (the oracles) these
# routines; kernels() compiles them with the compiled routines under those names.
_superpose = _superpose_py
_rotation = _rotation_py
