"""Direction estimates from predicted dot products (thesis eqs. 2.29–2.32)."""

import types

import numpy as np

from .._optional import compile_once

__all__ = [
    "analytic_direction",
    "sphere_direction",
    "numeric_direction",
    "numeric_loss",
    "numeric_hessian",
]


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
        phi = (bt**2 / np.maximum(gap, 1e-150) ** 2).sum(axis=1) - 1.0  # 1e-300: no 0/0
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
    The Hessian is :func:`numeric_hessian`.
    """
    e = d_c - rotated @ v
    w = np.exp(-((e / sigma1) ** 2) - (g / sigma2) ** 2)
    return -w.sum(), -(2.0 / sigma1**2) * ((w * e) @ rotated)


def numeric_hessian(v, d_c, g, rotated, sigma1, sigma2):
    """The Hessian of eq. (2.29) in R³ at ``v`` (3,), one environment.

    With e_j = d_c,j − r_j·v and w_j = exp(−(e_j/σ₁)² − (g_j/σ₂)²),
    ∇²J = −(2/σ₁²) Σ_j w_j (2 e_j²/σ₁² − 1) r_j r_jᵀ. On the unit sphere the
    Riemannian Hessian is P ∇²J P − (v·∇J) P with P = I − v vᵀ.

    Returns
    -------
    hessian : ndarray of shape (3, 3)
    """
    e = d_c - rotated @ v
    w = np.exp(-((e / sigma1) ** 2) - (g / sigma2) ** 2)
    return -(2.0 / sigma1**2) * ((rotated.T * (w * (2.0 * e**2 / sigma1**2 - 1.0))) @ rotated)


#: further starts of the Newton solve per environment (see :func:`numeric_direction`)
RESTARTS = 1


def numeric_direction(d_c, g, rotated, sigma1, sigma2, start, *, mask=None, solver="newton",
                      restarts=RESTARTS, max_iter=100, tol=1e-10):
    """Minimise eq. (2.29) over unit vectors from ``start``, every environment.

    Paper III's numeric loss, minimised over |v| = 1 from ``start`` (the
    direction to the nearest neighbour in paper III), by one of two solvers:

    - ``"newton"`` (default): Riemannian Newton steps on the sphere, compiled
      (numba) and looped over environments without Python in between
      (:func:`_numeric_newton_py`, with an exp the compiler vectorises). From the
      start every accepted step lowers J (Armijo backtracking along the great
      circle, the retraction v ← (v + t s)/|v + t s|, steps at most 1 in the
      tangent plane); where the Riemannian Hessian is not positive definite the
      step follows its absolute eigenvalues (a descent direction). It stops at a
      local minimum to rounding: a full Newton step shorter than 1e-10 rad, or
      no step lowering J beyond its rounding. (2.29) has many local minima, so it
      runs again from ``restarts`` further starts and keeps the lowest minimum
      (below).
    - ``"slsqp"``: paper III's sequential quadratic programming with the
      equality constraint v·v = 1 (scipy), one environment at a time, stopped
      when J changes by less than ``tol``, then the same Newton steps polish
      it (:func:`_sphere_newton`). SLSQP is not a local method here: its first
      quasi-Newton steps leave the sphere (|v| up to 10³) and it can end in
      another local minimum of (2.29) than the one below the start, deeper or
      shallower (7–14 % of Au25 hydrogens at K = 1 000, shallower in three cases
      of four: ``benchmarks/bench_oamlm.py``). Kept as the reference of earlier
      predictions and as the test oracle.

    The further starts of ``"newton"`` are, in turn, the minimiser of (2.30) on the
    sphere (:func:`sphere_direction`, ω = exp(−(g/σ₂)²) over the kept references)
    and the directions r_j of the kept references of largest weight (ties: the
    first); all run in the same compiled loop. A run replaces the answer only where
    its J is lower by more than both values' rounding, so ties go to ``start`` and
    the answer is never higher than the single-start one. On Au25 hydrogens at
    K = 1 000 (5 400 environments) the single-start answer is higher than
    ``"slsqp"``'s in 184 (paper III's filter) and 102 (all references); with one
    restart in 7 and 8, two 5 and 6, four 3 and 5, while 37–54×/34–37×, 30–41×/
    26× and 22–27×/16–17× faster than ``"slsqp"`` (50–84×/49–63× single-start; one
    core, two runs on a shared machine); on alkane hydrogens (K = 150) 68 → 4 → 2
    → 1 of 640 with the filter (``benchmarks/bench_oamlm.py``). Where one stays
    higher, SLSQP found a well none of the starts leads to.

    ``mask`` (n, K) restricts each sum to the accepted references Γ. References
    whose weight exp(−(g/σ₂)²) is below 1e-16 of the largest are dropped (their
    terms cannot change J).

    Parameters
    ----------
    d_c, g : ndarray of shape (n, K)
        Predicted dot products and alignment accuracies (Å).
    rotated : ndarray of shape (n, K, 3)
        Rotated reference directions r_j = R_j t̂_j.
    sigma1, sigma2 : float
        σ₁ (dimensionless) and σ₂ (Å) of (2.29).
    start : ndarray of shape (n, 3)
        Initial directions (any nonzero length).
    mask : ndarray of bool of shape (n, K), optional
        The references each sum runs over; every row must select one.
    solver : {"newton", "slsqp"}, default="newton"
    restarts : int, default=1
        Further starts of ``"newton"`` per environment (0: ``start`` alone); each
        costs about one more solve. Ignored by ``"slsqp"``.
    max_iter : int, default=100
        Newton iterations per environment (``"newton"``).
    tol : float, default=1e-10
        SLSQP's ``ftol`` (``"slsqp"``).

    Returns
    -------
    v : ndarray of shape (n, 3)
        Unit vectors.

    Raises
    ------
    ValueError
        For an unknown ``solver``, ``restarts`` not an integer ≥ 0, a start row
        that is zero or not finite, a mask row that selects no reference, or a
        selected reference with a value that is not finite (each named by its row).
    ModuleNotFoundError
        ``"newton"`` without numba (mlmlearn's ``atoms`` extra).
    """
    d_c = np.asarray(d_c, dtype=float)
    g = np.asarray(g, dtype=float)
    rotated = np.asarray(rotated, dtype=float)
    start = np.asarray(start, dtype=float)
    n, k = d_c.shape
    if g.shape != (n, k) or rotated.shape != (n, k, 3) or start.shape != (n, 3):
        raise ValueError(
            f"d_c and g must have shape (n, K), rotated (n, K, 3) and start (n, 3); got "
            f"{d_c.shape}, {g.shape}, {rotated.shape} and {start.shape}")
    mask = np.ones((n, k), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != (n, k):
        raise ValueError(f"mask must have shape {(n, k)}; got {mask.shape}")
    empty = ~mask.any(axis=1)
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise ValueError(f"mask row {row} selects no reference; the loss (2.29) needs one")
    finite = np.isfinite(d_c) & np.isfinite(g) & np.isfinite(rotated).all(axis=2)
    if not np.all(finite | ~mask):
        row, ref = (int(i[0]) for i in np.nonzero(~finite & mask))
        raise ValueError(
            f"row {row}, reference {ref}: d_c = {d_c[row, ref]}, g = {g[row, ref]}, rotated = "
            f"{rotated[row, ref]}; the loss (2.29) needs finite values")
    length = np.linalg.norm(start, axis=1)
    bad = ~(np.isfinite(length) & (length > 0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"start row {row} is {start[row]}, which has no direction")
    if isinstance(restarts, bool) or not isinstance(restarts, (int, np.integer)) or restarts < 0:
        raise ValueError(f"restarts must be an integer >= 0; got {restarts!r}")
    if solver == "newton":
        return _numeric_newton(d_c, g, rotated, sigma1, sigma2, start, mask, max_iter,
                               restarts)[0]
    if solver == "slsqp":
        return _numeric_slsqp(d_c, g, rotated, sigma1, sigma2, start, mask, tol)
    raise ValueError(f"solver must be 'newton' or 'slsqp'; got {solver!r}")


def _numeric_slsqp(d_c, g, rotated, sigma1, sigma2, start, mask, tol):
    """Paper III's solve, one SLSQP per environment, then :func:`_sphere_newton`.

    SLSQP stops when J changes by less than ``tol``, which leaves the direction
    off the minimum by up to √(2 tol / λ) rad (λ the curvature of J on the
    sphere); the Newton steps take it to the local minimum it converged
    towards, to rounding.
    """
    from scipy.optimize import minimize

    constraint = {"type": "eq", "fun": lambda v: v @ v - 1.0, "jac": lambda v: 2.0 * v}
    out = np.empty((len(d_c), 3))
    log_weight = -((g / sigma2) ** 2)
    for i in range(len(d_c)):
        keep = mask[i].copy()
        keep &= log_weight[i] >= log_weight[i][keep].max() - _LOG_DROP
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


#: references whose weight exp(−(g/σ₂)²) is below 1e-16 of the largest are dropped
_LOG_DROP = float(np.log(1e16))

#: the longest step in the tangent plane (1 = 45° after the retraction)
_MAX_STEP = 1.0


def _numeric_newton(d_c, g, rotated, sigma1, sigma2, start, mask, max_iter, restarts=0):
    """The compiled Newton solve: directions (n, 3), iterations (n,) and J (n,)."""
    kernel = _kernels()["all"]
    n = len(d_c)
    out = np.empty((n, 3))
    n_iter = np.zeros(n, dtype=np.intp)
    value = np.empty(n)
    log_weight = np.ascontiguousarray(-((g / sigma2) ** 2))
    kernel(np.ascontiguousarray(d_c), log_weight, np.ascontiguousarray(rotated),
           np.ascontiguousarray(mask), np.ascontiguousarray(start), 1.0 / sigma1**2,
           int(max_iter), int(restarts), out, n_iter, value)
    return out, n_iter, value


#: exp by Cody–Waite reduction to |r| ≤ ln2/2, a degree-13 Taylor polynomial and 2ⁿ built
#: in the exponent bits: a loop the compiler vectorises (libm's exp is a call per element)
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_ROUND = 6755399441055744.0  # 1.5 · 2⁵²: x + _ROUND rounds x to an integer in the low bits
_ROUND_BITS = int(np.float64(_ROUND).view(np.int64))


def _exp_into_py(x, out, scale, m):  # pragma: no cover - compiled
    """``out[:m] = exp(x[:m])`` for x ≤ 0 (``scale`` (m,) is scratch), to about 1 ulp.

    n = round(x log₂e) is read from the low bits of x log₂e + 1.5·2⁵²; r = x − n ln2
    in two parts (exact to |r| ulp); e^r by Horner's rule on its Taylor series to
    r¹³/13! (truncation < 3e-18 relative; Horner's rounding ≤ γ₂₆ e^{2|r|} ≤ 2γ₂₆
    relative, 1.01 ulp measured); 2ⁿ is (n + 1023) in the exponent field, exact.
    exp(x) for x < −708 (below 2⁻¹⁰²¹, where 2ⁿ would leave the normal range) is 0: such
    terms are < 1e-307 of the largest weight, 1.
    """
    for j in range(m):
        xj = max(x[j], -708.0)
        t = xj * _LOG2E + _ROUND
        n = t - _ROUND
        r = (xj - n * _LN2_HI) - n * _LN2_LO
        p = 1.0 / 6227020800.0
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        out[j] = p * r + 1.0
        scale[j] = t
    bits = scale.view(np.int64)
    for j in range(m):
        bits[j] = (bits[j] - _ROUND_BITS + 1023) << 52
    for j in range(m):
        out[j] = out[j] * scale[j] if x[j] >= -708.0 else 0.0


def _numeric_terms_py(v, m, d, log_w, r, inv, grad, hess, work):  # pragma: no cover - compiled
    """J (2.29) at ``v`` for m kept references, writing ∇J into ``grad`` and ∇²J into ``hess``.

    ``d`` and ``log_w`` (≥ m,) hold d_c,j and −(g_j/σ₂)² (shifted by a constant: J
    scales, its minimisers stay), ``r`` (3, ≥ m) the rotated directions by component,
    ``inv`` is 1/σ₁² and ``work`` (4, ≥ m) scratch. Vectorisable passes over the
    references: e_j = d_c,j − r_j·v, w_j = exp(log_w_j − e_j²/σ₁²) (:func:`_exp_into_py`),
    then J = −Σ w_j, ∇J = −(2/σ₁²) Σ w_j e_j r_j and
    ∇²J = −(2/σ₁²) Σ w_j (2 e_j²/σ₁² − 1) r_j r_jᵀ (sums in any order).
    """
    v0, v1, v2 = v[0], v[1], v[2]
    e_all, x_all, w_all = work[0], work[1], work[2]
    for j in range(m):
        e = d[j] - (r[0, j] * v0 + r[1, j] * v1 + r[2, j] * v2)
        e_all[j] = e
        x_all[j] = log_w[j] - e * e * inv
    _exp_into_py(x_all, w_all, work[3], m)
    f = 0.0
    g0 = g1 = g2 = 0.0
    h00 = h01 = h02 = h11 = h12 = h22 = 0.0
    for j in range(m):
        w = w_all[j]
        e = e_all[j]
        r0, r1, r2 = r[0, j], r[1, j], r[2, j]
        f -= w
        c = w * e
        g0 += c * r0
        g1 += c * r1
        g2 += c * r2
        h = w * (2.0 * e * e * inv - 1.0)
        h00 += h * r0 * r0
        h01 += h * r0 * r1
        h02 += h * r0 * r2
        h11 += h * r1 * r1
        h12 += h * r1 * r2
        h22 += h * r2 * r2
    s = -2.0 * inv
    grad[0], grad[1], grad[2] = s * g0, s * g1, s * g2
    hess[0, 0], hess[0, 1], hess[0, 2] = s * h00, s * h01, s * h02
    hess[1, 0], hess[1, 1], hess[1, 2] = s * h01, s * h11, s * h12
    hess[2, 0], hess[2, 1], hess[2, 2] = s * h02, s * h12, s * h22
    return f


def _numeric_newton_py(m, d, log_w, r, start, inv, max_iter, v,
                       work):  # pragma: no cover - compiled
    """Riemannian Newton on the unit sphere for (2.29), one environment; returns (J, iterations).

    ``m``, ``d``, ``log_w``, ``r`` and ``work`` are the kept references and scratch of
    :func:`_numeric_terms_py`; ``v`` (3,) receives the direction. In an
    orthonormal basis (u₁, u₂) of the tangent plane at v the Riemannian gradient
    is (u_a·∇J) and the Riemannian Hessian H_ab = u_aᵀ ∇²J u_b − (v·∇J) δ_ab. The
    step s solves H s = −grad where H is positive definite (det H > 0); elsewhere
    it follows H's absolute eigenvalues (floored at 1e-8 of the largest), a
    descent direction, with the length ``_MAX_STEP`` (the model is unbounded
    there). Steps are at most ``_MAX_STEP`` long, then halved until
    J(v') ≤ J(v) + 10⁻⁴ t s·grad (Armijo) with v' = (v + t s)/|v + t s|. A full
    Newton step is also taken when J rises by no more than its rounding,
    (m + 8) ε Σ w, since near the minimum J's change falls below that rounding
    before the direction is at the minimum to rounding. It stops after a full
    Newton step shorter than 1e-10 (the next would be ~1e-20: below v's rounding),
    when no halving lowers J (or the step falls below ε), or after ``max_iter``
    iterations.
    """
    eps = 2.220446049250313e-16
    grad = np.empty(3)
    hess = np.empty((3, 3))
    grad_t = np.empty(3)
    hess_t = np.empty((3, 3))
    trial = np.empty(3)
    u1 = np.empty(3)
    u2 = np.empty(3)
    norm = np.sqrt(start[0] ** 2 + start[1] ** 2 + start[2] ** 2)
    for a in range(3):
        v[a] = start[a] / norm
    f = _numeric_terms_py(v, m, d, log_w, r, inv, grad, hess, work)
    it = 0
    while it < max_iter:
        it += 1
        # the tangent basis: u₁ from the axis least aligned with v, u₂ = v × u₁
        a = 0
        if abs(v[1]) < abs(v[a]):
            a = 1
        if abs(v[2]) < abs(v[a]):
            a = 2
        for b in range(3):
            u1[b] = -v[a] * v[b]
        u1[a] += 1.0
        length = np.sqrt(u1[0] ** 2 + u1[1] ** 2 + u1[2] ** 2)
        for b in range(3):
            u1[b] /= length
        u2[0] = v[1] * u1[2] - v[2] * u1[1]
        u2[1] = v[2] * u1[0] - v[0] * u1[2]
        u2[2] = v[0] * u1[1] - v[1] * u1[0]
        radial = grad[0] * v[0] + grad[1] * v[1] + grad[2] * v[2]
        ga = grad[0] * u1[0] + grad[1] * u1[1] + grad[2] * u1[2]
        gb = grad[0] * u2[0] + grad[1] * u2[1] + grad[2] * u2[2]
        haa = hab = hbb = 0.0
        for b in range(3):
            for c in range(3):
                haa += u1[b] * hess[b, c] * u1[c]
                hab += u1[b] * hess[b, c] * u2[c]
                hbb += u2[b] * hess[b, c] * u2[c]
        haa -= radial
        hbb -= radial
        half_sum = 0.5 * (haa + hbb)
        half_diff = 0.5 * (haa - hbb)
        radius = np.sqrt(half_diff * half_diff + hab * hab)
        low, high = half_sum - radius, half_sum + radius
        det = low * high
        newton = low > 0.0 and det > 0.0
        if newton:
            sa = -(hbb * ga - hab * gb) / det
            sb = -(haa * gb - hab * ga) / det
        else:  # |H|: the eigenvectors (c, s) of ``high`` and (−s, c) of ``low``
            phi = 0.5 * np.arctan2(hab, half_diff) if radius > 0.0 else 0.0
            c, s = np.cos(phi), np.sin(phi)
            floor = max(1e-8 * max(abs(low), abs(high)), 1e-300)
            m_high = max(abs(high), floor)
            m_low = max(abs(low), floor)
            p_high = c * ga + s * gb
            p_low = -s * ga + c * gb
            sa = -(p_high / m_high * c - p_low / m_low * s)
            sb = -(p_high / m_high * s + p_low / m_low * c)
        length = np.sqrt(sa * sa + sb * sb)
        if length > _MAX_STEP or (length > 0.0 and not newton):
            sa *= _MAX_STEP / length
            sb *= _MAX_STEP / length
            length = _MAX_STEP
            newton = False
        slope = ga * sa + gb * sb
        if not slope < 0.0 or length <= eps:
            break
        rounding = (m + 8) * eps * abs(f)
        t = 1.0
        accepted = False
        while t * length > eps:
            for b in range(3):
                trial[b] = v[b] + t * (sa * u1[b] + sb * u2[b])
            scale = np.sqrt(trial[0] ** 2 + trial[1] ** 2 + trial[2] ** 2)
            for b in range(3):
                trial[b] /= scale
            f_trial = _numeric_terms_py(trial, m, d, log_w, r, inv, grad_t, hess_t, work)
            if f_trial <= f + 1e-4 * t * slope or (newton and t == 1.0
                                                    and f_trial <= f + rounding):
                accepted = True
                break
            t *= 0.5
        if not accepted:
            break
        f = f_trial
        for b in range(3):
            v[b] = trial[b]
            grad[b] = grad_t[b]
            for c in range(3):
                hess[b, c] = hess_t[b, c]
        if newton and t == 1.0 and length < 1e-10:
            break
    return f, it


def _numeric_all_py(d_c, log_w, rotated, mask, start, inv, max_iter, restarts, out, n_iter,
                    value):  # pragma: no cover - compiled
    """:func:`_numeric_newton_py` for every environment (rows), over its kept references.

    Row i keeps the references of ``mask[i]`` whose −(g/σ₂)² is within ln 1e16
    of the largest kept one, shifted by that largest (J scales by a constant). With
    ``restarts`` > 0 it runs again from up to ``restarts`` further starts, in turn:
    the minimiser of (2.30) on the sphere over the kept references
    (:func:`_sphere_start_py`), then the directions r_j of the kept references of
    largest weight exp(−(g_j/σ₂)²) (ties: the first), skipping a zero start. A later
    run replaces the answer only where its J is lower by more than both values'
    rounding, (m + 8) ε (|J| + |J'|): ties go to the given start, and the answer is
    never higher than the single-start one. ``n_iter`` counts
    the iterations of the run kept.
    """
    n, k = d_c.shape
    d = np.empty(k)
    lw = np.empty(k)
    r = np.empty((3, k))
    work = np.empty((4, k))
    v = np.empty(3)
    extra = np.empty(3)
    top_refs = np.empty(max(restarts - 1, 0), dtype=np.intp)
    eps = 2.220446049250313e-16
    for i in range(n):
        top = -np.inf
        for j in range(k):
            if mask[i, j] and log_w[i, j] > top:
                top = log_w[i, j]
        m = 0
        for j in range(k):
            if mask[i, j] and log_w[i, j] >= top - _LOG_DROP:
                d[m] = d_c[i, j]
                lw[m] = log_w[i, j] - top
                r[0, m] = rotated[i, j, 0]
                r[1, m] = rotated[i, j, 1]
                r[2, m] = rotated[i, j, 2]
                m += 1
        best, best_it = _numeric_newton_py(m, d, lw, r, start[i], inv, max_iter, out[i], work)
        # the kept references of largest weight, by insertion (ties: the first)
        n_top = min(restarts - 1, m) if restarts > 1 else 0
        for t in range(n_top):
            top_refs[t] = -1
            for j in range(m):
                taken = False
                for u in range(t):
                    if top_refs[u] == j:
                        taken = True
                if not taken and (top_refs[t] < 0 or lw[j] > lw[top_refs[t]]):
                    top_refs[t] = j
        for s in range(min(restarts, n_top + 1)):
            if s == 0:  # the minimiser of (2.30) on the sphere
                _sphere_start_py(m, d, lw, r, work, extra)
            else:
                j = top_refs[s - 1]
                extra[0], extra[1], extra[2] = r[0, j], r[1, j], r[2, j]
            length = np.sqrt(extra[0] ** 2 + extra[1] ** 2 + extra[2] ** 2)
            if not (length > 0.0 and length < np.inf):
                continue
            f, it = _numeric_newton_py(m, d, lw, r, extra, inv, max_iter, v, work)
            if f < best - (m + 8) * eps * (abs(f) + abs(best)):
                best, best_it = f, it
                out[i, 0], out[i, 1], out[i, 2] = v[0], v[1], v[2]
        value[i], n_iter[i] = best, best_it


def _sphere_start_py(m, d, log_w, r, work, v):  # pragma: no cover - compiled
    """:func:`sphere_direction` for one environment's m kept references, into ``v`` (3,).

    The minimiser of ½ Σ w_j (v·r_j − d_j)² over |v| = 1, w_j = exp(log_w_j) (ω of
    (2.31) over the kept references): v = (A − μI)⁻¹ b with A = Σ w r rᵀ, b = Σ w d r
    and μ < λ_min(A) found by bisection on |v| = 1 in A's eigenbasis; in the hard
    case (b ⟂ the lowest eigenvector) the missing length goes along that eigenvector.
    ``v`` is left zero where A and b are (no reference has weight).
    """
    _exp_into_py(log_w, work[2], work[3], m)
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for j in range(m):
        w = work[2, j]
        for p in range(3):
            b[p] += w * d[j] * r[p, j]
            for q in range(3):
                a[p, q] += w * r[p, j] * r[q, j]
    lam, vec = np.linalg.eigh(a)
    bt = np.zeros(3)
    size = 0.0
    for p in range(3):
        for q in range(3):
            bt[p] += vec[q, p] * b[q]
        size += b[p] * b[p]
    low = lam[0] - np.sqrt(size) - 1e-300
    high = lam[0]
    for _ in range(100):
        mid = 0.5 * (low + high)
        phi = -1.0
        for p in range(3):
            gap = max(lam[p] - mid, 1e-150)  # gap² ≥ 1e-300: b = 0 gives 0, not 0/0
            phi += bt[p] * bt[p] / (gap * gap)
        if phi < 0.0:
            low = mid
        else:
            high = mid
    coeff = np.zeros(3)
    length = 0.0
    for p in range(3):
        coeff[p] = bt[p] / max(lam[p] - low, 1e-300)
        length += coeff[p] * coeff[p]
    if length < 1.0 - 1e-10:  # the hard case
        rest = 0.0
        for p in range(1, 3):
            coeff[p] = bt[p] / max(lam[p] - lam[0], 1e-300)
            rest += coeff[p] * coeff[p]
        coeff[0] = np.sqrt(max(1.0 - rest, 0.0))
    for p in range(3):
        v[p] = vec[p, 0] * coeff[0] + vec[p, 1] * coeff[1] + vec[p, 2] * coeff[2]


def _kernels():
    """The compiled Newton solver (numba), compiled or loaded from cache once per process."""
    return _compile()


@compile_once
def _compile():
    from .._optional import import_optional
    from ._superpose import with_globals

    numba = import_optional("numba", purpose="the OAMLM numeric loss solver")
    jit = numba.njit(cache=True, nogil=True)
    # contraction (FMA) only in exp: reassociation would undo its rounding trick and
    # its two-part reduction; the sums of the terms may run in any order (vectorised)
    exp_into = numba.njit(cache=True, nogil=True, fastmath={"contract"})(_exp_into_py)
    terms = numba.njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})(
        with_globals(_numeric_terms_py, _exp_into_py=exp_into))
    newton = jit(with_globals(_numeric_newton_py, _numeric_terms_py=terms))
    sphere = jit(with_globals(_sphere_start_py, _exp_into_py=exp_into))
    return types.MappingProxyType({
        "exp": exp_into,
        "terms": terms,
        "newton": newton,
        "sphere": sphere,
        "all": jit(with_globals(_numeric_all_py, _numeric_newton_py=newton,
                                _sphere_start_py=sphere)),
    })


def _sphere_newton(v, d_c, g, rotated, sigma1, sigma2, *, max_steps=8):
    """Riemannian Newton steps for (2.29) on the unit sphere, from a nearby ``v``.

    With e_j = d_c,j − r_j·v and w_j = exp(−(e_j/σ₁)² − (g_j/σ₂)²), J = −Σ w_j has
    ∇J = −(2/σ₁²) Σ w_j e_j r_j and ∇²J = −(2/σ₁²) Σ w_j (2 e_j²/σ₁² − 1) r_j r_jᵀ;
    on the sphere the Hessian is P ∇²J P − (v·∇J) P with P = I − v vᵀ. Steps are
    taken in the tangent plane while that Hessian is positive definite (its smaller
    eigenvalue above 8 ε of the larger: one reference's circle of minima has a zero
    one) and J does not rise beyond rounding; otherwise ``v`` is returned as it is.
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
        lam, vec = np.linalg.eigh(h)
        if not lam[0] > 8 * np.finfo(float).eps * abs(lam[1]):  # not definite to rounding
            break
        step = -basis @ (vec @ ((vec.T @ gt) / lam))
        trial = v + step
        trial /= np.linalg.norm(trial)
        new_value, new_e, new_w = loss(trial)
        if new_value > value + 1e-14 * abs(value):
            break
        v, value, e, w = trial, new_value, new_e, new_w
        if np.linalg.norm(step) < 1e-15:
            break
    return v
