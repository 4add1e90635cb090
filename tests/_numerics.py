"""Error bounds derived from the conditioning of a problem, for test tolerances.

Every function returns a bound (never a tuned constant) built from the
standard rounding model ``fl(a ∘ b) = (a ∘ b)(1 + δ)``, ``|δ| ≤ u = eps/2``,
and first-order perturbation theory; ``gamma(n) = n·u / (1 - n·u)`` bounds the
rounding of an n-term sum or dot product in any summation order (Higham,
*Accuracy and Stability of Numerical Algorithms*, 2nd ed., §3.1). First-order
bounds carry the factor ``1 / (1 - κε)`` where they apply.
"""

import numpy as np

EPS = float(np.finfo(np.float64).eps)
U = EPS / 2


def gamma(n):
    """``n·u / (1 - n·u)``: relative rounding bound of an n-term sum or dot product."""
    return n * U / (1 - n * U)


def distance_bound(X, Y, D):
    """Elementwise bound on ``|D - D_exact|`` for :func:`mlmlearn._distances.euclidean_distances`.

    ``D`` is the kernel's output. The expansion ``|x|² - 2x·q + |q|²`` has
    ``|d̂² - d²| ≤ E = (p + 2)·eps·(|x|² + |q|²)`` for p features (the dot product
    and both norms γ_p each, two additions 2u each on partial sums below
    ``2(|x|² + |q|²)``), hence ``|d̂ - d| ≤ |d̂² - d²| / d̂`` and ``≤ √E``; the final
    square root adds ``u·d̂``. Entries recomputed from differences are within
    ``(p/2 + 3)·eps·d`` (difference u, sum of squares γ_p, square root), which
    ``(p + 4)·eps·D`` covers; the entries certainly recomputed (D² well below
    the kernel's threshold) get that bound alone. The factor ``1 + (p + 2)·eps``
    covers norms computed rather than exact.
    """
    from mlmlearn._distances import _RECOMPUTE_RTOL

    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    p = X.shape[1]
    xx = np.einsum("ij,ij->i", X, X)
    yy = np.einsum("ij,ij->i", Y, Y)
    scale = xx[:, None] + yy[None, :]
    E = (p + 2) * EPS * (1 + (p + 2) * EPS) * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where(D > 0, E / np.where(D > 0, D, 1.0), np.inf)
    bound = np.minimum(first, np.sqrt(E)) + (p + 4) * EPS * D
    # D² ≤ thr/4 means d² ≤ (D + √E)² < 0.36·thr and so d̂² ≤ d² + E < thr (E ≤ thr/100
    # for p < 4e5): such an entry was certainly recomputed from the differences
    recomputed = (D**2 <= 0.25 * _RECOMPUTE_RTOL * scale) & (E <= 0.01 * _RECOMPUTE_RTOL * scale)
    return np.where(recomputed, (p + 4) * EPS * D, bound)


def oracle_distances(X, Y):
    """Brute force ``‖X[i] - Y[k]‖`` from the differences, and its error bound.

    The difference is rounded by u per component, the sum of squares by γ_p and
    the square root by u: relative error at most ``(p/2 + 3)·eps``.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    D = np.linalg.norm(X[:, None, :] - Y[None, :, :], axis=2).reshape(len(X), len(Y))
    return D, (X.shape[1] / 2 + 3) * EPS * D


def ridge_solution_bound(D, Y, beta, W, eD, eY):
    """Bound on ``‖Ŵ - W_exact‖_F`` for the Cholesky solve of (2.18), one run.

    ``(DᵀD + λI) W = DᵀY`` with ``λ = β/K``. The data carry elementwise errors
    ``eD`` (the distance kernel) and ``eY`` (target centring); forming ``DᵀD``
    and ``DᵀY`` adds ``γ_N‖D‖_F²`` and ``γ_N‖D‖_F‖Y‖_F``; Cholesky's backward
    error is ``K·γ_{3K+1}‖A‖₂`` (Higham Thm 10.4 with ‖|Rᵀ||R|‖ ≤ K‖A‖). Then
    ``‖ΔW‖ ≤ ‖A⁻¹‖ (‖ΔA‖‖W‖ + ‖ΔB‖) / (1 - ‖A⁻¹‖‖ΔA‖)``.
    """
    N, K = D.shape
    lam = beta / K
    s = np.linalg.svd(D, compute_uv=False)
    s_max = s[0]
    s_min = s[-1] if N >= K else 0.0
    inv_norm = 1.0 / (s_min**2 + lam)
    a_norm = s_max**2 + lam
    nD, nY, fD = np.linalg.norm(eD), np.linalg.norm(eY), np.linalg.norm(D)
    dA = 2 * s_max * nD + nD**2 + gamma(N) * fD**2 + K * gamma(3 * K + 1) * a_norm
    dB = nD * np.linalg.norm(Y) + s_max * nY + nD * nY + gamma(N) * fD * np.linalg.norm(Y)
    denom = 1.0 - inv_norm * dA
    assert denom > 0.5, "the perturbation is too large for a first-order bound"
    return inv_norm * (dA * np.linalg.norm(W) + dB) / denom


def product_bound(d, ed, W, eW):
    """Bound on ``|d̂ Ŵ - d W|`` per row (all outputs): data errors and the K-term sums."""
    K = d.shape[1]
    absW = np.abs(W).max(axis=1) if W.ndim == 2 else np.abs(W)
    return (np.linalg.norm(d, axis=1) * eW + ed @ absW
            + gamma(K) * (np.abs(d) @ absW) + np.linalg.norm(ed, axis=1) * eW)


def cubic_root_bound(delta, t, y, e_delta):
    """Bound on the error of :func:`mlmlearn.multilateration.cubic_multilateration`.

    For every row: ``y`` minimises ``J(y) = Σ((y - t_k)² - δ_k²)²``; centred,
    ``x = y - t̄`` is a root of ``x³ + px + q`` with ``p = (3Σs² - Σδ²)/K`` and
    ``q = (Σδ²s - Σs³)/K``, ``s = t - t̄``. Errors ``e_delta`` in δ, the rounding
    of the sums (γ_{K+2}) and of the centring (``eps·(|t| + |t̄|)`` per s_k)
    perturb p and q, and ``|Δx| ≤ (|x||Δp| + |Δq|) / |3x² + p|``; the computed
    root itself satisfies the cubic to its evaluation error ``γ_4(|x|³ + |px| + |q|)``
    (counted twice: computed and true residual); adding ``t̄`` back costs ``u|y|``.
    Valid where the chosen minimum is isolated (``3x² + p`` not near 0 and no
    other minimum of nearly equal J), which the caller checks.
    """
    delta = np.atleast_2d(delta)
    e_delta = np.broadcast_to(e_delta, delta.shape)
    t = np.asarray(t, dtype=np.float64)
    K = t.size
    mean = t.mean()
    s = t - mean
    es = EPS * (np.abs(t) + abs(mean)) + gamma(K) * np.abs(t).mean()
    d2 = delta**2
    p = (3 * s @ s - d2.sum(axis=1)) / K
    q = (d2 @ s - (s**2) @ s) / K
    x = np.asarray(y, dtype=np.float64).ravel() - mean
    g = gamma(K + 2)
    dp = (2 * (np.abs(delta) * e_delta).sum(axis=1) + 6 * np.abs(s) @ es
          + g * (3 * s @ s + d2.sum(axis=1))) / K
    dq = (2 * (np.abs(delta) * e_delta) @ np.abs(s) + d2 @ es + 3 * (s**2) @ es
          + g * (d2 @ np.abs(s) + np.abs(s) ** 3 @ np.ones(K))) / K
    curv = np.abs(3 * x**2 + p)
    residual = 2 * gamma(4) * (np.abs(x) ** 3 + np.abs(p * x) + np.abs(q))
    return (np.abs(x) * dp + dq + residual) / curv + U * np.abs(x + mean), p, q


def single_real_root(p, q):
    """Whether ``x³ + px + q`` has one real root (so J has one minimum): the
    premise under which :func:`cubic_root_bound` is continuous in its data."""
    return (q / 2) ** 2 + (p / 3) ** 3 > 0


class Optimality:
    """What :func:`kkt` finds about one column's fit."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def kkt(X, y, coef, intercept, sigma, epsilon, alpha):
    """How far one column's fit can be from the optimum, from its gradient and curvature.

    In standardised coordinates (features centred, unit RMS; θ = (w̃, c̃), then σ)
    the gradient g of HuberRegressor's objective and the Hessian H of its local
    quadratic model (inlier set fixed) give ``‖(θ, σ) - (θ*, σ*)‖ ≤ ‖g‖ / λ_min(H)``
    to first order, and by convexity the objective is above its minimum by at
    most ``‖g‖ · ‖(θ, σ) - (θ*, σ*)‖``. ``g`` is enlarged by its own rounding
    bound: residuals ``γ_{m+2}(|y| + |X||w| + |c|)`` (this is where the
    representation of a line in offset coordinates enters), times ``2/σ`` per
    inlier, plus the n-term sums ``γ_n Σ|a||ψ|``. The objective's rounding bound
    is γ_{n+m+4} of the sum of its terms' magnitudes plus ``Σ|ψ||Δr|``.
    """
    n, m = X.shape
    mean = X.mean(axis=0)
    rms = np.sqrt(np.mean((X - mean) ** 2, axis=0))
    A = np.column_stack([(X - mean) / rms, np.ones(n)])
    r = y - X @ coef - intercept
    dr = gamma(m + 2) * (np.abs(y) + np.abs(X) @ np.abs(coef) + abs(intercept))
    inl = np.abs(r) <= epsilon * sigma
    psi = np.where(inl, 2 * r / sigma, 2 * epsilon * np.sign(r))
    pen = np.r_[1 / rms**2, 0.0]
    theta = np.r_[coef * rms, intercept + mean @ coef]
    g = np.r_[-(A.T @ psi) + 2 * alpha * pen * theta,
              n - (~inl).sum() * epsilon**2 - (r[inl] ** 2).sum() / sigma**2]
    dg = np.r_[np.abs(A).T @ (np.where(inl, 2 * dr / sigma, 0.0)) + gamma(n) * np.abs(A).T
               @ np.abs(psi), 2 * gamma(n) * n + 2 * (np.abs(r[inl]) * dr[inl]).sum() / sigma**2]
    Ai, ri = A[inl], r[inl]
    P = m + 1
    H = np.empty((P + 1, P + 1))
    H[:P, :P] = 2 / sigma * Ai.T @ Ai + 2 * alpha * np.diag(pen)
    H[:P, P] = H[P, :P] = 2 / sigma**2 * Ai.T @ ri
    H[P, P] = 2 * (ri**2).sum() / sigma**3
    lam_min = np.linalg.eigvalsh(H)[0]
    assert lam_min > 0, "degenerate local model: no distance bound"
    from sklearn.linear_model._huber import _huber_loss_and_gradient

    f = _huber_loss_and_gradient(np.r_[coef, intercept, sigma], X, y, epsilon, alpha,
                                 np.ones(n))[0]
    # the objective's terms, each rounded by at most γ_{n+m+4} of its magnitude, and
    # the residual errors times |ψ|
    f_abs = n * sigma + (r[inl] ** 2).sum() / sigma + 2 * epsilon * np.abs(r[~inl]).sum() \
        + sigma * epsilon**2 * (~inl).sum() + alpha * coef @ coef
    rho_f = gamma(n + m + 4) * f_abs + np.abs(psi) @ dr
    g_norm = np.linalg.norm(g) + np.linalg.norm(dg)
    dist = g_norm / lam_min
    return Optimality(dist=dist, excess=g_norm * dist, f=f, rho_f=rho_f, A=A, lam_min=lam_min,
                      sigma=sigma, inliers=inl, mean=mean, rms=rms)


def lstsq_solution_bound(D, Y, B, eD, eY):
    """Bound on ``‖B̂[:, j] - B_exact[:, j]‖`` per column for ``min ‖D B - Y‖`` (gelsd).

    Higham, Thm 20.1 (Wedin): with relative perturbations ε of D and of each
    column y, ``‖Δb‖/‖b‖ ≤ κε/(1 - κε) (2 + (κ + 1)‖r‖/(‖D‖‖b‖))``. ε counts the
    data errors ``eD``, ``eY`` and the SVD solver's backward error γ_{N·K}.
    """
    N, K = D.shape
    s = np.linalg.svd(D, compute_uv=False)
    kappa = s[0] / s[-1]
    R = Y - D @ B
    eps_D = np.linalg.norm(eD) / s[0] + gamma(N * K)
    eps_Y = np.linalg.norm(eY, axis=0) / np.maximum(np.linalg.norm(Y, axis=0), 1e-300) \
        + gamma(N * K)
    e = np.maximum(eps_D, eps_Y)
    assert np.all(kappa * e < 0.5), "the perturbation is too large for a first-order bound"
    bnorm = np.linalg.norm(B, axis=0)
    return kappa * e / (1 - kappa * e) * (2 * bnorm + (kappa + 1) * np.linalg.norm(R, axis=0)
                                          / s[0])


def mlm_delta_error(model, X, Y, Xt, eY=None, eD=None):
    """Bound on the error of MLM's ``δ = d B`` at ``Xt``, per entry (β = 0, gelsd).

    ``X``, ``Y`` are the training data; ``eY(D_out)`` and ``eD(D_in)`` give the
    elementwise errors of the output and input distances (default: the distance
    kernel's own bound). B's error per column is :func:`lstsq_solution_bound`;
    ``d`` carries the kernel's bound, and ``dB`` its K-term sums.
    """
    from mlmlearn._distances import euclidean_distances

    Q, T = model.references_, model.output_references_
    Y = np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
    Din = euclidean_distances(X, Q)
    Dout = euclidean_distances(Y, T)
    e_out = distance_bound(Y, T, Dout) if eY is None else eY(Dout)
    e_in = distance_bound(X, Q, Din) if eD is None else eD(Din)
    eB = lstsq_solution_bound(Din, Dout, model.coef_, e_in, e_out)
    d = euclidean_distances(Xt, Q)
    ed = distance_bound(Xt, Q, d)
    K = d.shape[1]
    return (np.linalg.norm(d, axis=1)[:, None] * eB[None, :] + ed @ np.abs(model.coef_)
            + gamma(K) * (np.abs(d) @ np.abs(model.coef_)))



# --------------------------------------------------------------- superposition
class SuperpositionBounds:
    """Error bounds of computed superpositions, per pair (see :func:`superposition_bounds`)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def value_gap(self, r_a, method_a, r_b, method_b):
        """Bound on ``|r_a − r_b|`` for two computed ``√Σ|R̂x − y|²`` of the same pairs.

        Each computed value lies in ``[r* − lo, r* + hi(r*)]``, ``hi`` falling with
        r*; r* is at least ``ρ = min(r_a, r_b) − max hi(0)``.
        """
        lo = {m: self._lo(m) for m in (method_a, method_b)}
        rho = np.maximum(np.minimum(r_a, r_b) - np.maximum(self._hi(method_a, 0.0),
                                                           self._hi(method_b, 0.0)), 0.0)
        hi_a, hi_b = self._hi(method_a, rho), self._hi(method_b, rho)
        return np.maximum(hi_a + lo[method_b], hi_b + lo[method_a])

    def _slack(self, method):
        # distance of R̂ from the rotations (times ‖X‖) and the rounding of the residual
        return self.nX * self.orth[method] + self.rounding + self.sum_rounding * (
            self.nX + self.nY)

    def _lo(self, method):
        return np.minimum(self._slack(method), self.nX * self.rotation[method] + self.rounding
                          + self.sum_rounding * (self.nX + self.nY))

    def _hi(self, method, r):
        with np.errstate(invalid="ignore"):
            value = np.sqrt(r**2 + self.excess[method]) - r
        rot = self.nX * self.rotation[method]
        return np.minimum(np.where(np.isfinite(value), value, np.inf), rot) + self._slack(method)


def superposition_bounds(X, Y, *, dX=0.0, dY=0.0, tol=1e-12):
    """Error bounds of the optimal proper rotation taking ``X`` onto ``Y``, per pair.

    ``X``, ``Y`` are (n_pairs, n, 3) (or (n, 3)); ``dX``, ``dY`` bound the Frobenius
    norms of errors already in the data (scalars or per pair); ``tol`` is QCP's Newton
    tolerance. R* is the exact optimum for the exact data. With ``H = Σ x_k y_kᵀ``,
    singular values σ₁ ≥ σ₂ ≥ σ₃ and d = sign det of its orthogonal polar factor, the
    optimal proper rotation is the special orthogonal polar factor and Horn's 4×4
    matrix N has the eigenvalues σ₁ + σ₂ + dσ₃ = λ₁ ≥ λ₂ ≥ … with the gaps
    ``Δ₂ = 2(σ₂ + dσ₃)``, ``Δ₃ = 2(σ₁ + dσ₃)``, ``Δ₄ = 2(σ₁ + σ₂)`` below λ₁. Magnitudes
    are bounded by ``λ̄ = (‖X‖² + ‖Y‖²)/2`` (QCP's start; ≥ ‖X‖‖Y‖ ≥ ‖H‖_* ≥ |N_ij|).

    * Data and forming H: ``E = ‖dX‖‖Y‖ + ‖X‖‖dY‖ + ‖dX‖‖dY‖ + γ_n‖X‖‖Y‖``. The polar
      factor moves by ``‖δR‖_F ≤ 2E/(σ₂ + dσ₃)`` to first order (R.-C. Li, SIAM J.
      Matrix Anal. Appl. 16 (1995) 327, with σ₃ signed for the proper rotation); the
      denominator is lowered by E for the perturbed singular values (Weyl).
    * QCP (:func:`mlmlearn.oamlm._superpose.qcp`): Newton stops within ``tol·λ̄`` of
      the largest root of the characteristic quartic, whose computed coefficients and
      evaluation err by at most ``90 γ₁₀ λ̄⁴`` (det N by 2×2 minors ``24 γ₁₀ λ̄⁴``, c₂
      ``2γ₁₀λ̄²``, c₁ ``48 γ₆ λ̄³``, the evaluation ``12 γ₆ λ̄⁴``), which moves the root by
      that over ``p'(λ₁) = Δ₂Δ₃Δ₄``. The adjugate column of ``N − λ̂I`` then holds the
      other eigenvectors with relative weight ``δλ/(Δ_j − δλ)`` each, and its 3×3
      cofactors (three products of an entry ≤ 2λ̄ and a 2×2 minor ≤ 8λ̄², six roundings
      deep) err by ``48 γ₆ λ̄³`` in norm against a column of norm ≥ ``Δ₂Δ₃Δ₄/2`` (the
      chosen column has ``|q_c| ≥ 1/2``): the quaternion's angle error ε_q. It doubles
      in the rotation, ``‖δR‖_F ≤ 2√2 ε_q``; the objective ``λ₁ − q̂ᵀNq̂ = Σ_j (λ₁ − λ_j)
      (q̂·q_j)²`` loses at most ``Δ₄ε_q²``. Near a double λ₁ (collinear sets) the root
      of the quartic is only fixed to ``√(δp/(Δ₃Δ₄))`` and q̂ mixes q₁ and q₂ freely,
      which costs at most Δ₂; the weight on q₃, q₄ is bounded with the column's norm
      taken at least QCP's fallback threshold, so this value bound, though loose, holds
      on either side of the threshold.
      Normalising q (``|‖q̂‖² − 1| ≤ 2γ₅ + γ₄``) and forming R (``γ₄`` per entry) leave R̂
      off the rotation group by the ``orth`` bound. Pairs whose adjugate column may be
      below QCP's fallback threshold ``10⁻¹⁰ λ̄³`` get the larger of both methods' bounds.
    * SVD (:func:`~mlmlearn.oamlm._superpose.kabsch`, and QCP's fallback for a
      multiple λ₁): LAPACK's SVD is backward stable, the computed factors being those of
      ``H + δH``, ``‖δH‖_F ≤ p(3)·u·‖H‖_F``, orthogonal to ``p(3)·u`` (LAPACK Users'
      Guide §4.9, "a modestly growing function"; taken as p(3) = 3³, i.e. γ₂₇); forming
      ``V D Uᵀ`` adds ``3γ₃``.
    * Values ``r = √Σ|Rx − y|²``: a rotation error changes r by at most ``‖X‖‖δR‖``;
      independently of any gap, a rotation exactly optimal for a perturbed ``H + δH``
      loses at most ``4‖δH‖_* ≤ 4√3‖δH‖_F`` of ``r²`` (the ``excess``). A computed r
      also carries the distance of R̂ from the rotations times ‖X‖ and the rounding of
      the residuals (each entry ``γ₄(|R||x| + |y|)``, their squares summed ``γ_{3n+2}``).

    Returns
    -------
    SuperpositionBounds
        ``rotation[m]``: bound on ‖R̂ − R*‖_F for ``m`` in {"qcp", "svd"} (inf where
        the gap allows none); ``excess[m]``; ``orth[m]``; ``orthogonality`` and ``det``:
        bounds on the entries of ``R̂R̂ᵀ − I`` and on ``|det R̂ − 1|`` for QCP's
        quaternion path; ``gaps`` (Δ₂, Δ₃, Δ₄); ``nX``, ``nY``, ``n``; and
        :meth:`~SuperpositionBounds.value_gap`.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim == 2:
        X, Y = X[None], Y[None]
    n = X.shape[1]
    H = np.einsum("bki,bkj->bij", X, Y)
    U, s, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(U) * np.linalg.det(Vt))
    d[d == 0] = 1.0
    s3 = d * s[:, 2]
    nX = np.linalg.norm(X, axis=(1, 2))
    nY = np.linalg.norm(Y, axis=(1, 2))
    nH = np.linalg.norm(H, axis=(1, 2))
    lam = 0.5 * (nX**2 + nY**2)
    dX = np.broadcast_to(np.asarray(dX, dtype=np.float64), nX.shape)
    dY = np.broadcast_to(np.asarray(dY, dtype=np.float64), nX.shape)
    E = dX * nY + nX * dY + dX * dY + gamma(n) * nX * nY
    gaps = np.stack([2 * (s[:, 1] + s3), 2 * (s[:, 0] + s3), 2 * (s[:, 0] + s[:, 1])])

    def polar(err):
        gap = 0.5 * gaps[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gap > err, 2 * err / (gap - err), np.inf)

    # the quaternion path, on the gaps of the computed H (Weyl: each moves by ≤ 2E)
    D2, D3, D4 = np.maximum(gaps - 2 * E, 0.0)
    adj_err = 48 * gamma(6) * lam**3
    threshold = np.sqrt(1e-20) * lam**3 * (1 + 8 * EPS)  # QCP's fallback: |column| ≤ this
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        prod = D2 * D3 * D4
        dp = 90 * gamma(10) * lam**4
        # a simple root moves by δp/p'(λ₁); one of a close pair by at most √(δp/(Δ₃Δ₄))
        dlam = tol * lam + np.minimum(dp / prod, np.sqrt(dp / (D3 * D4)))
        eps_q = 2 * np.sqrt(3) * dlam / (D2 - dlam) + 2 * adj_err / prod
        eps_q = np.where((D2 > dlam) & (prod > 0), eps_q, np.inf)
        # for the objective only the weight on eigenvectors far below λ₁ counts: that of
        # q₂ costs Δ₂ each, those of q₃, q₄ (relative δλ/(Δ_j − δλ)) cost up to Δ₄; the
        # column is above QCP's threshold whenever the quaternion path is taken
        column = np.maximum(0.5 * (D2 - dlam) * (D3 - dlam) * (D4 - dlam), threshold)
        eps_far = 2 * np.sqrt(3) * dlam / (D3 - dlam) + 2 * adj_err / column
        eps_far = np.where(D3 > dlam, eps_far, np.inf)
        # the chosen column's norm: the q₁ term Π|λ_i − λ̂| (|q₁c| ≥ 1/2 for the largest),
        # the other eigenvectors' δλ·Π over the rest, and the cofactors' rounding
        up = [D + 4 * E + dlam for D in (D2, D3, D4)]
        column_hi = up[0] * up[1] * up[2] + 3 * dlam * up[2] ** 2 + adj_err
        column_lo = (0.5 * (D2 - dlam) * (D3 - dlam) * (D4 - dlam) - adj_err
                     - np.sqrt(3) * dlam * up[1] * up[2])
    quaternion = column_lo > threshold  # certainly the quaternion path
    fallback = column_hi < threshold * (1 - 8 * EPS)  # certainly the SVD fallback
    qn = 2 * gamma(5) + gamma(4)
    entry = gamma(4) * (1 + qn)
    orth_q = np.sqrt(3) * qn + 3 * entry
    orth_svd = 6 * gamma(27) + 3 * gamma(3)
    back = E + gamma(27) * nH
    rot_q = polar(E) + 2 * np.sqrt(2) * np.minimum(eps_q, 1.0) + orth_q
    rot_q = np.where(np.isfinite(eps_q), rot_q, np.inf)
    rot_svd = polar(back) + orth_svd
    with np.errstate(over="ignore", invalid="ignore"):
        excess_q = (2 * ((D2 + 4 * E) + (D4 + 4 * E) * np.minimum(eps_far, 1.0) ** 2)
                    + 4 * np.sqrt(3) * E)
        excess_q = np.where(np.isfinite(eps_q), np.minimum(
            excess_q, 2 * (D4 + 4 * E) * np.minimum(eps_q, 1.0) ** 2 + 4 * np.sqrt(3) * E),
            excess_q)
    excess_svd = 4 * np.sqrt(3) * back

    def either(q, svd):
        return np.where(quaternion, q, np.where(fallback, svd, np.maximum(q, svd)))

    orthogonality = (2 * qn * (1 + qn) + 2 * np.sqrt(3) * entry * (1 + qn)
                     + gamma(3) * (1 + qn) ** 2)
    # det R̂ = ‖q̂‖⁶ det R(q̂/‖q̂‖) + Σ cofactor·error; numpy's LU adds γ₃ per entry of
    # |L||U| ≤ 2 (partial pivoting on an orthogonal matrix), times cofactors ≤ 1
    det = 3 * qn * (1 + qn) ** 2 + 9 * entry * (1 + qn) ** 2 + 18 * gamma(3)
    return SuperpositionBounds(
        rotation={"qcp": either(rot_q, rot_svd), "svd": rot_svd},
        excess={"qcp": either(excess_q, excess_svd), "svd": excess_svd},
        orth={"qcp": either(orth_q, orth_svd), "svd": orth_svd},
        rounding=gamma(4) * ((1 + orth_svd) * np.sqrt(3) * nX + nY),
        sum_rounding=gamma(3 * n + 2),
        orthogonality=orthogonality, det=det, gaps=gaps, quaternion=quaternion,
        fallback=fallback, nX=nX, nY=nY, n=n,
    )
