"""Regularised least squares in distance space, shared by EMLM (2.18) and MLM (2.20)."""

import warnings

import numpy as np
from scipy import linalg

__all__ = ["NormalEquations", "solve_distance_regression"]


# OpenBLAS's threaded Cholesky (dpotrf_U_parallel -> dsyrk_thread_UT) crashes with SIGSEGV
# from n = 15 800 on with two threads (the scipy 1.17 and numpy 2.4 wheels, OpenBLAS 0.3.31;
# scipy's cho_factor, solve(assume_a="pos") and numpy's cholesky alike; one thread runs).
# Systems from this size on are factorized on one BLAS thread.
_SINGLE_THREAD_CHOLESKY = 12_000


def _cholesky_solve(A, rhs):
    """Solve the SPD system ``A W = rhs`` by Cholesky (``A`` overwritten); None if singular.

    Numerically singular means: Cholesky fails, or the reciprocal condition number
    (LAPACK ``pocon``) is below machine epsilon. From ``_SINGLE_THREAD_CHOLESKY``
    unknowns on, the factorization runs on one BLAS thread (see the comment there).
    """
    if A.shape[0] >= _SINGLE_THREAD_CHOLESKY:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return _cholesky_solve_threaded(A, rhs)
    return _cholesky_solve_threaded(A, rhs)


def _cholesky_solve_threaded(A, rhs):
    anorm = np.abs(A).sum(axis=0).max()
    try:
        c, lower = linalg.cho_factor(A, lower=False, overwrite_a=True, check_finite=False)
        (pocon,) = linalg.get_lapack_funcs(("pocon",), (c,))
        rcond, info = pocon(c, anorm)
        singular = info != 0 or rcond < np.finfo(np.float64).eps
    except linalg.LinAlgError:
        singular = True
    if singular:
        return None
    return linalg.cho_solve((c, lower), rhs, check_finite=False)


def _warn_singular(name, beta, k, instead, stacklevel):
    warnings.warn(
        f"the distance system with {name}={beta:g} is numerically singular "
        f"({k} references); solving it by {instead} instead. A larger "
        f"{name} or fewer references makes the fit faster and better conditioned.",
        linalg.LinAlgWarning,
        stacklevel=stacklevel + 1,
    )


def solve_distance_regression(D, Y, beta, *, name="beta", return_gram=False):
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
    return_gram : bool, default=False
        Also return ``DᵀD`` (without β/K) when ``W`` solves the normal equations
        by Cholesky, None when it comes from a least-squares solve (β = 0 or a
        singular system): the statistics :class:`NormalEquations` updates.

    Returns
    -------
    W : ndarray of shape (n_references, n_outputs)
    gram : ndarray of shape (n_references, n_references) or None
        Only with ``return_gram=True``.
    """
    k = D.shape[1]
    lam = beta / k
    gram = None
    if lam > 0:
        A = D.T @ D
        if return_gram:
            gram = A.copy()
        A.flat[:: k + 1] += lam
        W = _cholesky_solve(A, D.T @ Y)
        if W is not None:
            return (W, gram) if return_gram else W
        gram = None
        _warn_singular(name, beta, k, "SVD least squares", stacklevel=3)
        D = np.vstack([D, np.sqrt(lam) * np.eye(k)])
        Y = np.vstack([Y, np.zeros((k, Y.shape[1]))])
    W = linalg.lstsq(D, Y, check_finite=False, lapack_driver="gelsd")[0]
    return (W, gram) if return_gram else W


class NormalEquations:
    """The training data of (2.18) as far as its solution depends on them, updatable by rows.

    With the K references fixed, the ridge solution of (2.18)

    ``(G + λI) W = Σᵢ wᵢ dᵢ (yᵢ − ȳ)ᵀ``,  ``G = Σᵢ wᵢ dᵢ dᵢᵀ``,
    ``ȳ = Σᵢ wᵢ yᵢ / n``,  ``n = Σᵢ wᵢ``

    (``ȳ = 0`` without an intercept; ``dᵢ`` the distances of sample i to the
    references, ``wᵢ`` its weight, 1 in a fit) depends on the samples only through
    ``G``, the right-hand side, the column sums ``s = Σᵢ wᵢ dᵢ`` and ``n``. The
    right-hand side (K × n_outputs: 2K columns for an OAMLM) is not stored: the
    current ``W`` solves the current system, so new rows ``D_B, Y_B`` with weights
    ``w_B`` change it by (recursive least squares)

    ``ΔW = (G' + λ'I)⁻¹ [D_Bᵀ diag(w_B)(Y_B − ȳ' − D_B W) − s Δȳᵀ − (λ' − λ) W]``

    with ``G' = G + D_Bᵀ diag(w_B) D_B``, ``ȳ' = ȳ + Δȳ``,
    ``Δȳ = Σ w_B (y_B − ȳ) / n'``: in exact arithmetic the solution on all rows,
    and in floating point as accurate as a fit on all rows (the update carries the
    old solution's normal-equation residual, ε‖G‖‖W‖, not its forward error).

    Parameters
    ----------
    gram : ndarray of shape (K, K)
        ``G`` (without the ridge term).
    lam : float
        The ridge term λ = β/K the current solution was solved with.
    n_samples : float
        ``n``, the total weight of the rows.
    column_sums : ndarray of shape (K,) or None
        ``s``; None for a solution without intercept (``ȳ = 0``).

    Notes
    -----
    Keeping ``G`` costs 8K² bytes per model (50 MB at K = 2 500).
    """

    def __init__(self, gram, lam, n_samples, column_sums=None):
        self.gram = gram
        self.lam = float(lam)
        self.n_samples = float(n_samples)
        self.column_sums = column_sums

    def update(self, D, Y, W, *, weights=None, mean=None, lam=None, beta=None, name="beta"):
        """The statistics with rows added, and the solution on all rows.

        Parameters
        ----------
        D : ndarray of shape (n_new, K)
            Distances of the new rows to the references.
        Y : ndarray of shape (n_new, n_outputs)
            Their targets.
        W : ndarray of shape (K, n_outputs)
            The current solution (solving the current system).
        weights : ndarray of shape (n_new,), default=None
            Row weights ≥ 0 (an integer weight m is the row repeated m times); ones
            by default.
        mean : ndarray of shape (n_outputs,), default=None
            The current ``ȳ`` (intercept) when the solution has one.
        lam : float, default=None
            The ridge term of the new solution; the current one by default.
        beta, name : float, str
            The parameter behind ``lam`` and its name, for the warning of a
            singular system.

        Returns
        -------
        statistics : NormalEquations
            New statistics (this object is unchanged).
        W : ndarray of shape (K, n_outputs)
        mean : ndarray of shape (n_outputs,) or None
        """
        k = self.gram.shape[0]
        w = np.ones(D.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
        lam = self.lam if lam is None else float(lam)
        Dw = D * w[:, None]
        gram = self.gram + Dw.T @ D
        n = self.n_samples + float(w.sum())
        if mean is None:
            new_mean, sums = None, None
            rhs = Dw.T @ (Y - D @ W)
        else:
            if self.column_sums is None:
                raise ValueError("these statistics were gathered without an intercept")
            shift = (w @ (Y - mean)) / n if n > 0 else np.zeros_like(mean)
            new_mean = mean + shift
            rhs = Dw.T @ (Y - new_mean - D @ W) - np.outer(self.column_sums, shift)
            sums = self.column_sums + Dw.sum(axis=0)
        if lam != self.lam:
            rhs -= (lam - self.lam) * W
        A = gram.copy()
        A.flat[:: k + 1] += lam
        delta = _cholesky_solve(A, rhs)
        if delta is None:
            _warn_singular(name, self.lam * k if beta is None else beta, k,
                           "SVD least squares on the normal equations", stacklevel=3)
            A = gram.copy()
            A.flat[:: k + 1] += lam
            delta = linalg.lstsq(A, rhs, check_finite=False, lapack_driver="gelsd")[0]
        return NormalEquations(gram, lam, n, sums), W + delta, new_mean
