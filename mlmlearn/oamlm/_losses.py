"""Direction estimates from predicted dot products (thesis eqs. 2.30–2.32)."""

import numpy as np

__all__ = ["analytic_direction", "sphere_direction", "numeric_direction", "numeric_loss"]


def analytic_direction(omega, d_c, rotated):
    """Eq. (2.32) as published, then normalised: Σ ω d r / Σ ω.

    ``omega`` and ``d_c`` are (n, K); ``rotated`` (n, K, 3) holds R_ij t_j.
    (2.32) is the stationary point of (2.30) only when Σ ω r rᵀ ∝ I;
    :func:`sphere_direction` is the exact minimiser.
    """
    v = np.einsum("nk,nk,nki->ni", omega, d_c, rotated) / omega.sum(axis=1, keepdims=True)
    return _normalise(v)


def sphere_direction(omega, d_c, rotated, *, n_bisect=100):
    """The unit vector minimising eq. (2.30): ½ Σ ω (v·r − d)², |v| = 1.

    With A = Σ ω r rᵀ and b = Σ ω d r the minimiser is v = (A − μI)⁻¹ b with
    the μ < λ_min(A) that makes |v| = 1 (a trust-region subproblem); μ is found
    by bisection on the secular equation in A's eigenbasis, for all samples at
    once. In the "hard case" (b ⟂ the lowest eigenvector) μ = λ_min and the
    missing length goes along that eigenvector.
    """
    A = np.einsum("nk,nki,nkj->nij", omega, rotated, rotated)
    b = np.einsum("nk,nk,nki->ni", omega, d_c, rotated)
    lam, Q = np.linalg.eigh(A)
    bt = np.einsum("nji,nj->ni", Q, b)  # Qᵀ b
    low = lam[:, 0] - np.linalg.norm(b, axis=1) - 1e-300
    high = lam[:, 0].copy()
    for _ in range(n_bisect):
        mid = 0.5 * (low + high)
        gap = lam - mid[:, None]
        phi = (bt**2 / np.maximum(gap, 1e-300) ** 2).sum(axis=1) - 1.0
        below = phi < 0
        low = np.where(below, mid, low)
        high = np.where(below, high, mid)
    mu = low
    gap = np.maximum(lam - mu[:, None], 1e-300)
    coeff = bt / gap
    length = (coeff**2).sum(axis=1)
    hard = length < 1.0 - 1e-10
    if np.any(hard):  # b has (almost) no component along the lowest eigenvector
        rest = bt[hard, 1:] / np.maximum(lam[hard, 1:] - lam[hard, :1], 1e-300)
        tau = np.sqrt(np.maximum(1.0 - (rest**2).sum(axis=1), 0.0))
        coeff[hard] = np.column_stack([tau, rest])
    return _normalise(np.einsum("nij,nj->ni", Q, coeff))


def _normalise(v):
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def numeric_loss(v, d_c, g, rotated, sigma1, sigma2):
    """Eq. (2.29) and its gradient at ``v`` (3,) for one environment.

    J(v) = −Σ_j exp(−((d_c,j − r_j·v)/σ₁)² − (g_j/σ₂)²),
    ∇J = −Σ_j 2 e_j/σ₁² · exp(...) r_j with e_j = d_c,j − r_j·v.
    """
    e = d_c - rotated @ v
    w = np.exp(-((e / sigma1) ** 2) - (g / sigma2) ** 2)
    return -w.sum(), -(2.0 / sigma1**2) * ((w * e) @ rotated)


def numeric_direction(d_c, g, rotated, sigma1, sigma2, start, *, mask=None, tol=1e-10):
    """Minimise eq. (2.29) over unit vectors by SLSQP, one environment at a time.

    Paper III's numeric loss: the equality constraint |v|² = 1 is handled by
    sequential quadratic programming, starting from ``start`` (the direction
    to the nearest neighbour in paper III). SLSQP stops when J changes by less
    than ``tol``, which leaves the direction off the minimum by up to
    √(2 tol / λ) rad (λ the curvature of J on the sphere); a few Newton steps on
    the sphere (:func:`_sphere_newton`) then take it to the local minimum it
    converged towards, to rounding, so that predictions do not depend on where
    the optimiser happened to stop (rotating a structure rotates them exactly).

    ``mask`` (n, K) restricts each sum to the accepted references Γ. References
    whose weight exp(−(g/σ₂)²) is below 1e-16 of the largest are dropped (their
    terms cannot change J).

    Parameters
    ----------
    d_c, g : ndarray of shape (n, K)
    rotated : ndarray of shape (n, K, 3)
    sigma1, sigma2 : float
    start : ndarray of shape (n, 3)
    mask : ndarray of bool of shape (n, K), optional

    Returns
    -------
    v : ndarray of shape (n, 3)
        Unit vectors.
    """
    from scipy.optimize import minimize

    constraint = {"type": "eq", "fun": lambda v: v @ v - 1.0, "jac": lambda v: 2.0 * v}
    out = np.empty((len(d_c), 3))
    log_weight = -((g / sigma2) ** 2)
    for i in range(len(d_c)):
        keep = np.ones(d_c.shape[1], dtype=bool) if mask is None else mask[i].copy()
        keep &= log_weight[i] >= log_weight[i][keep].max() - np.log(1e16)
        args = (d_c[i, keep], g[i, keep], rotated[i, keep], sigma1, sigma2)
        v0 = _normalise(np.asarray(start[i], dtype=float)[None])[0]
        result = minimize(
            numeric_loss,
            v0,
            args=args,
            jac=True,
            method="SLSQP",
            constraints=[constraint],
            options={"ftol": tol, "maxiter": 200},
        )
        out[i] = _sphere_newton(_normalise(result.x[None])[0], *args)
    return _normalise(out)


def _sphere_newton(v, d_c, g, rotated, sigma1, sigma2, *, max_steps=8):
    """Riemannian Newton steps for (2.29) on the unit sphere, from a nearby ``v``.

    With e_j = d_c,j − r_j·v and w_j = exp(−(e_j/σ₁)² − (g_j/σ₂)²), J = −Σ w_j has
    ∇J = −(2/σ₁²) Σ w_j e_j r_j and ∇²J = −(2/σ₁²) Σ w_j (2 e_j²/σ₁² − 1) r_j r_jᵀ;
    on the sphere the Hessian is P ∇²J P − (v·∇J) P with P = I − v vᵀ. Steps are
    taken in the tangent plane while that Hessian is positive definite and J does
    not rise beyond rounding; otherwise ``v`` is returned as it is.
    """
    log_w0 = -((g / sigma2) ** 2)
    shift = log_w0.max() if log_w0.size else 0.0  # J scaled by a constant: same minimiser

    def loss(u):
        e = d_c - rotated @ u
        w = np.exp(log_w0 - shift - (e / sigma1) ** 2)
        return -w.sum(), e, w

    value, e, w = loss(v)
    for _ in range(max_steps):
        grad = -(2.0 / sigma1**2) * ((w * e) @ rotated)
        hess = -(2.0 / sigma1**2) * ((rotated.T * (w * (2.0 * e**2 / sigma1**2 - 1.0))) @ rotated)
        basis = np.linalg.svd(np.eye(3) - np.outer(v, v))[0][:, :2]  # the tangent plane
        h = basis.T @ hess @ basis - (v @ grad) * np.eye(2)
        gt = basis.T @ grad
        if not np.all(np.linalg.eigvalsh(h) > 0):
            break
        step = -basis @ np.linalg.solve(h, gt)
        trial = v + step
        trial /= np.linalg.norm(trial)
        new_value, new_e, new_w = loss(trial)
        if new_value > value + 1e-14 * abs(value):
            break
        v, value, e, w = trial, new_value, new_e, new_w
        if np.linalg.norm(step) < 1e-15:
            break
    return v
