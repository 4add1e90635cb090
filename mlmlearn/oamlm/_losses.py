"""Direction estimates from predicted dot products (thesis eqs. 2.30–2.32)."""

import numpy as np

__all__ = ["analytic_direction", "sphere_direction"]


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
