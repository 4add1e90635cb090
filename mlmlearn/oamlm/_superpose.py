"""Batched optimal superposition of small point sets (the alignment core of the OAMLM).

For pairs of point sets ``X`` (to be rotated) and ``Y`` (target), already
centred on the atom whose force is predicted, find the proper rotation R
minimising Σ_k |R x_k − y_k|² (thesis eq. 2.24, paper IV eqs. 9–11).

* :func:`kabsch` — the SVD method of Arun et al. with the reflection fixed
  (det R = +1); the clear version, kept as the oracle.
* :func:`qcp` — Horn's quaternion form solved as Theobald's quaternion
  characteristic polynomial: the largest eigenvalue of a 4×4 symmetric
  matrix by Newton's method on its quartic, the quaternion from the adjugate.
  Compiled with numba (installed with ``mlmlearn[atoms]``).
"""

import numpy as np

__all__ = ["kabsch", "qcp"]


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
    until the step is below ``tol`` · λ; the RMSD is that of the rotation found. Compiled
    with numba; one pair per loop iteration, no allocation inside the loop.
    Pairs whose largest eigenvalue is multiple (collinear or otherwise
    degenerate sets, where the quaternion is not unique) go to :func:`kabsch`.

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
    degenerate = np.zeros(X.shape[0], dtype=np.bool_)
    X, Y = np.ascontiguousarray(X), np.ascontiguousarray(Y)
    _qcp_kernel()(X, Y, float(tol), int(max_newton), R, rmsd, degenerate)
    if degenerate.any():
        R[degenerate], rmsd[degenerate] = kabsch(X[degenerate], Y[degenerate])
    return R, rmsd


_KERNEL = None


def _qcp_kernel():
    global _KERNEL
    if _KERNEL is None:
        import numba

        _KERNEL = numba.njit(cache=True, nogil=True)(_qcp_loop)
    return _KERNEL


def _qcp_loop(X, Y, tol, max_newton, R, rmsd, degenerate):  # pragma: no cover - compiled by numba
    n_pairs, n_points = X.shape[0], X.shape[1]
    A = np.empty((4, 4))
    column = np.empty(4)
    others = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    for b in range(n_pairs):
        sxx = sxy = sxz = syx = syy = syz = szx = szy = szz = 0.0
        g = 0.0
        for k in range(n_points):
            x0, x1, x2 = X[b, k, 0], X[b, k, 1], X[b, k, 2]
            y0, y1, y2 = Y[b, k, 0], Y[b, k, 1], Y[b, k, 2]
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
        # quaternion: the largest column of adj(N - lam I); column j holds the
        # cofactors (-1)^(i+j) det(A without row j and column i)
        A[0, 0], A[1, 1], A[2, 2], A[3, 3] = n00 - lam, n11 - lam, n22 - lam, n33 - lam
        A[0, 1] = A[1, 0] = n01
        A[0, 2] = A[2, 0] = n02
        A[0, 3] = A[3, 0] = n03
        A[1, 2] = A[2, 1] = n12
        A[1, 3] = A[3, 1] = n13
        A[2, 3] = A[3, 2] = n23
        best, q0, q1, q2, q3 = -1.0, 1.0, 0.0, 0.0, 0.0
        for j in range(4):
            r0, r1, r2 = others[j, 0], others[j, 1], others[j, 2]
            for i in range(4):
                k0, k1, k2 = others[i, 0], others[i, 1], others[i, 2]
                minor = (
                    A[r0, k0] * (A[r1, k1] * A[r2, k2] - A[r1, k2] * A[r2, k1])
                    - A[r0, k1] * (A[r1, k0] * A[r2, k2] - A[r1, k2] * A[r2, k0])
                    + A[r0, k2] * (A[r1, k0] * A[r2, k1] - A[r1, k1] * A[r2, k0])
                )
                column[i] = minor if (i + j) % 2 == 0 else -minor
            norm = column[0] ** 2 + column[1] ** 2 + column[2] ** 2 + column[3] ** 2
            if norm > best:
                best, q0, q1, q2, q3 = norm, column[0], column[1], column[2], column[3]
        # a multiple largest eigenvalue (e.g. collinear sets) leaves adj(A) ~ 0:
        # flag the pair for the SVD oracle
        degenerate[b] = not best > 1e-20 * g**6
        if degenerate[b]:
            q0, q1, q2, q3 = 1.0, 0.0, 0.0, 0.0
        else:
            inv = 1.0 / np.sqrt(best)
            q0, q1, q2, q3 = q0 * inv, q1 * inv, q2 * inv, q3 * inv
        R[b, 0, 0] = q0 * q0 + q1 * q1 - q2 * q2 - q3 * q3
        R[b, 0, 1] = 2.0 * (q1 * q2 - q0 * q3)
        R[b, 0, 2] = 2.0 * (q1 * q3 + q0 * q2)
        R[b, 1, 0] = 2.0 * (q1 * q2 + q0 * q3)
        R[b, 1, 1] = q0 * q0 - q1 * q1 + q2 * q2 - q3 * q3
        R[b, 1, 2] = 2.0 * (q2 * q3 - q0 * q1)
        R[b, 2, 0] = 2.0 * (q1 * q3 - q0 * q2)
        R[b, 2, 1] = 2.0 * (q2 * q3 + q0 * q1)
        R[b, 2, 2] = q0 * q0 - q1 * q1 - q2 * q2 + q3 * q3
        # the residual of the rotation itself: exact even where λ is a double root
        msd = 0.0
        for k in range(n_points):
            for i in range(3):
                d = R[b, i, 0] * X[b, k, 0] + R[b, i, 1] * X[b, k, 1] + R[b, i, 2] * X[b, k, 2]
                d -= Y[b, k, i]
                msd += d * d
        rmsd[b] = np.sqrt(msd / n_points)
