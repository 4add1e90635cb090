"""Regularised least squares in distance space, shared by EMLM (2.18) and MLM (2.20)."""

import warnings

import numpy as np
from scipy import linalg

__all__ = ["solve_distance_regression"]


def solve_distance_regression(D, Y, beta, *, name="beta"):
    """Solve ``(DᵀD + β/K·I) W = DᵀY`` (thesis eq. 2.18; eq. 2.20 when β = 0).

    With ``beta > 0`` the normal equations are solved by Cholesky. When the
    regularised matrix is numerically singular (Cholesky fails, or its
    reciprocal condition number is below machine epsilon) the equivalent
    stacked least-squares problem ``[D; √(β/K)·I] W ≈ [Y; 0]`` is solved by
    SVD instead, with a :class:`scipy.linalg.LinAlgWarning`. With ``beta = 0``
    the least-squares problem ``D W ≈ Y`` is solved directly (minimum norm).

    Parameters
    ----------
    D : ndarray of shape (n_samples, n_references)
    Y : ndarray of shape (n_samples, n_outputs)
    beta : float
        Regularisation β ≥ 0 of eq. (2.16); the ridge term is β/K.
    name : str, default="beta"
        Name of the parameter, for the warning.

    Returns
    -------
    W : ndarray of shape (n_references, n_outputs)
    """
    k = D.shape[1]
    lam = beta / k
    if lam > 0:
        A = D.T @ D
        A.flat[:: k + 1] += lam
        rhs = D.T @ Y
        anorm = np.abs(A).sum(axis=0).max()
        try:
            c, lower = linalg.cho_factor(A, lower=False, overwrite_a=True, check_finite=False)
            (pocon,) = linalg.get_lapack_funcs(("pocon",), (c,))
            rcond, info = pocon(c, anorm)
            singular = info != 0 or rcond < np.finfo(np.float64).eps
        except linalg.LinAlgError:
            singular = True
        if not singular:
            return linalg.cho_solve((c, lower), rhs, check_finite=False)
        warnings.warn(
            f"the distance system with {name}={beta:g} is numerically singular "
            f"({k} references); solving it by SVD least squares instead. A larger "
            f"{name} or fewer references makes the fit faster and better conditioned.",
            linalg.LinAlgWarning,
            stacklevel=3,
        )
        D = np.vstack([D, np.sqrt(lam) * np.eye(k)])
        Y = np.vstack([Y, np.zeros((k, Y.shape[1]))])
    return linalg.lstsq(D, Y, check_finite=False, lapack_driver="gelsd")[0]
