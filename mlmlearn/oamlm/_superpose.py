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

When several orderings of a reference fit an input equally well — a symmetric
input or reference: a methyl's three H, the built gold-thiolate rings — rounding
alone would pick one of them, and a rotated copy of the input could pick another,
whose rotation turns the reference's force another way. Orderings whose
accuracy is within the rounding of the best (:func:`accuracy_bound`) therefore
count alike: the alignment returns the mean of their rotations (see
:func:`best_alignments`).

The compiled routines come from :func:`kernels`: one compile step (or load from
numba's on-disk cache), guarded by a lock and cached, so threads that align at
the same time on a cold start all get the same compiled objects. The pure-Python
routines (``_rotation_py``, ``_superpose_py``, ``_all_py``) stay importable as the
oracles of the compiled ones; nothing rebinds module globals.
"""

import types

import numpy as np

from .._optional import compile_once, import_optional

__all__ = ["kabsch", "qcp", "best_alignments", "accuracy_bound", "rotation_bound", "kernels"]


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


def best_alignments(P, S, orders, *, rss=False, tol=1e-12, max_newton=50, return_ties=False):
    """Align every input with every reference under each ordering; keep the best.

    The fused kernel behind :meth:`mlmlearn.oamlm.Alignment.align`: for input
    ``i``, reference ``j`` and ordering ``o`` the reference points
    ``S[j, orders[o]]`` are superposed on ``P[i]`` by QCP and scored by the
    alignment accuracy of eq. (2.25) (mean distance, ``rss=False``) or
    eq. (2.26) (root of the summed squares over the number of points,
    ``rss=True``); the ordering with the smallest accuracy wins.

    Orderings that tie with the winner count alike. The computed accuracy ĝ_o of
    an ordering is within E_o = :func:`accuracy_bound` of its exact value, so two
    orderings whose exact accuracies are equal (a symmetry of the input or of the
    reference maps one onto the other) differ by at most E_o + E_b — and symmetric
    orderings have the same conditioning, hence the same bound. Every ordering
    with ĝ_o − ĝ_b ≤ 2 E_b, b the first ordering of smallest ĝ, is a tie, and R is
    the mean of the tied orderings' rotations. The OAMLM uses R only through
    R t̂ (eqs. 2.29–2.32 and D_c = ŷ · R t̂), which is linear in R, so this is the
    mean of the tied orderings' rotated directions: rotating the input rotates it
    exactly, whichever ordering rounding favours. Only R changes: g is the best
    accuracy, and where one ordering wins, R is its rotation to the last bit, as
    before. For well-spread point sets 2E_b is ~10⁻¹¹ of their size (Σ|x_m|/n), so
    only exact symmetries tie (to rounding); orderings of a structure perturbed by
    ≫ 2E_b do not. The bound E_b covers the kernel's own rounding; errors already in
    the points (coordinates rounded when a structure is rotated or translated,
    ~u |position|) stay well inside it while positions are within ~10³ sizes of the
    origin. Where the best ordering's own alignment is degenerate (κ beyond
    :func:`rotation_bound`'s range: collinear points, whose rotation the points do
    not fix) E_b is as large as an accuracy can be wrong and every ordering ties.

    Parameters
    ----------
    P : ndarray of shape (n_inputs, n_points, 3)
    S : ndarray of shape (n_references, n_points, 3)
    orders : ndarray of int of shape (n_orderings, n_points)
        Row permutations of the reference points.
    rss : bool, default=False
        Eq. (2.26) instead of eq. (2.25).
    tol, max_newton : float, int
        QCP's Newton tolerance (relative to the eigenvalue) and iteration cap.
    return_ties : bool, default=False
        Also return the bound E_b and the number of tied orderings.

    Returns
    -------
    R : ndarray of shape (n_inputs, n_references, 3, 3)
        Rotations taking reference coordinates into the input's frame: the best
        ordering's, or the mean of the tied orderings' (then not a rotation:
        ‖R‖₂ ≤ 1).
    g : ndarray of shape (n_inputs, n_references)
        The best accuracy (Å).
    best : ndarray of int of shape (n_inputs, n_references)
        Index of the first ordering of best accuracy.
    bound : ndarray of shape (n_inputs, n_references)
        Only with ``return_ties``: E_b, the bound on the error of ``g`` (Å); the
        tie tolerance is 2 E_b.
    n_tied : ndarray of int of shape (n_inputs, n_references)
        Only with ``return_ties``: how many orderings R averages (1: no tie).
    """
    P = np.ascontiguousarray(P, dtype=float)
    S = np.ascontiguousarray(S, dtype=float)
    orders = np.ascontiguousarray(orders, dtype=np.int64)
    n, k = len(P), len(S)
    R = np.empty((n, k, 3, 3))
    g = np.empty((n, k))
    best = np.empty((n, k), dtype=np.int64)
    bound = np.empty((n, k))
    n_tied = np.empty((n, k), dtype=np.int64)
    kernels()["all"](P, S, orders, bool(rss), float(tol), int(max_newton), R, g, best, bound,
                     n_tied)
    if return_ties:
        return R, g, best, bound, n_tied
    return R, g, best


def rotation_bound(kappa, n_terms, tol=1e-12):
    """Bound on ‖R̂ − R*‖_F of a QCP rotation, from its conditioning κ (first order).

    R* is the exact optimal rotation of the data QCP was given. With
    H = Σ x_m y_mᵀ (singular values σ₁ ≥ σ₂ ≥ σ₃, d the sign of its polar
    factor's determinant), Horn's 4×4 matrix N (eigenvalues λ₁ ≥ λ₂ ≥ …, gaps
    Δ_k = λ₁ − λ_k: Δ₂ = 2(σ₂ + dσ₃), Δ₃ = 2(σ₁ + dσ₃), Δ₄ = 2(σ₁ + σ₂)),
    λ̄ = (Σ|x|² + Σ|y|²)/2 (QCP's start, ≥ ‖H‖_*) and κ = λ̄³ / p'(λ₁) = λ̄³ / (Δ₂Δ₃Δ₄)
    (≥ 1/8; QCP returns p'(λ̂)):

    * Δ₃, Δ₄ ≤ 2λ̄, so Δ₂ ≥ λ̄ / (4κ);
    * forming H from the ``n_terms`` points errs by ≤ γ_n ‖X‖‖Y‖ ≤ γ_n λ̄, which
      moves the polar factor by ≤ 2γ_n λ̄ / (Δ₂/2 − γ_n λ̄) (R.-C. Li, SIAM J. Matrix
      Anal. Appl. 16 (1995) 327);
    * the quartic's computed coefficients and evaluation err by ≤ 90 γ₁₀ λ̄⁴, which
      moves its simple root λ₁ by ≤ 90 γ₁₀ κ λ̄; Newton, monotone from above, stops
      after a step s ≤ tol·λ̄ and is then within 3s²/Δ₂ / (1 − 3s/Δ₂)² of λ₁
      (p/p' = 1/Σ_k 1/(λ − λ_k) ≥ eΔ₂/(Δ₂ + 3e) at λ = λ₁ + e);
    * the adjugate column of N − λ̂I leans towards the other eigenvectors by
      ≤ 2√3 δλ/(Δ₂ − δλ), and its cofactors' rounding (≤ 48 γ₆ λ̄³ against a
      column ≥ Δ₂Δ₃Δ₄/2) adds 96 γ₆ κ: the quaternion's angle error ε_q;
    * R̂ doubles it, ‖δR‖_F ≤ 2√2 ε_q, plus its distance from the rotations,
      √3(2γ₅ + γ₄) + 3γ₄(1 + 2γ₅ + γ₄) (the quaternion's norm and R's entries).

    While γ_n ≤ Δ₂/(4λ̄), 3 tol ≤ Δ₂/(2λ̄) and δλ ≤ Δ₂/2 — all implied by
    κ ≤ κ_max = min(1/(16γ_n), 1/(24 tol), (8(90γ₁₀ + 48 tol²))^(−1/2)) ≈ 10⁶ — the
    denominators are at least half their leading terms, which gives the
    division-free form used:

        ‖δR‖_F ≤ 32√6 (90γ₁₀ + 48 tol²) κ² + (32γ_n + 192√2 γ₆) κ + √3(2γ₅ + γ₄) + …

    Beyond κ_max (or κ = inf: Newton did not converge, or the SVD fallback for a
    multiple λ₁ took over) the bound is the largest distance of two rotations,
    2√2, plus R̂'s distance from the rotations. For well-spread sets κ ≈ 0.5–1
    and the bound is 2–8·10⁻¹² (10⁴–4·10⁴ u: every rounding's worst case added up).
    These are the bounds of the test suite's ``superposition_bounds``, with the
    gaps replaced by what κ alone guarantees.

    Parameters
    ----------
    kappa : float
        κ = λ̄³ / p'(λ̂), inf where QCP cannot vouch for the rotation.
    n_terms : int
        Points in the sums (a centre at the origin of both sets left out).
    tol : float, default=1e-12
        QCP's Newton tolerance.

    Returns
    -------
    float
    """
    return _rotation_bound_py(float(kappa), int(n_terms), float(tol))


def accuracy_bound(kappa, sum_x, sum_y, n_points, n_terms, g, tol=1e-12):
    """Bound on |ĝ − g| of eq. (2.25) or (2.26) computed at a QCP rotation (Å, first order).

    g is the accuracy at the exact optimal rotation R* of the same points, ĝ the
    value computed at the QCP rotation R̂. Both accuracies move by at most
    ‖R̂ − R*‖ Σ|x_m| / n (each |R x_m − y_m|, and the root of their summed squares,
    is 1-Lipschitz in R x_m), with ‖R̂ − R*‖_F ≤ :func:`rotation_bound` (the
    rotation of the same ``n_terms`` points); computing a
    residual component (three products and three sums) errs by γ₄(Σ_c |R_ac x_c| +
    |y_a|), ≤ γ₄(√3|x_m| + |y_m|) per point, and the norms, the sum over the
    ``n_terms`` points, the root and the division by ``n_points`` by a relative
    γ_{3 n_terms + 4}.

    Parameters
    ----------
    kappa : float
        QCP's conditioning κ (see :func:`rotation_bound`).
    sum_x, sum_y : float
        Σ|x_m| and Σ|y_m| over the points summed (Å).
    n_points, n_terms : int
        The divisor n of (2.25)/(2.26) and the number of points summed.
    g : float
        The computed accuracy (Å).
    tol : float, default=1e-12

    Returns
    -------
    float
    """
    kappa = float(kappa)
    # the kernels pass λ̄ and p'(λ̂), κ = λ̄³/p'; here λ̄ = 1, p' = 1/κ stand for them
    dp = 1.0 / kappa if kappa > 0 else np.inf
    return _accuracy_bound_py(1.0, dp, float(tol), float(sum_x), float(sum_y),
                              int(n_points), int(n_terms), float(g))


def kernels():
    """The compiled routines, compiled (or loaded from numba's cache) once per process.

    Thread-safe: concurrent first calls wait for one compile step and get the
    same objects.

    Returns
    -------
    kernels : mapping
        ``"rotation"`` — the single-pair routine ``(x, y, order, first, tol,
        max_newton, R)`` that writes the rotation of ``x[order[first:]]`` onto
        ``y[first:]`` and returns p'(λ̂) (its conditioning), for other compiled kernels
        (the gold-thiolate core rule); ``"rotation_bound"`` and
        ``"accuracy_bound"`` — :func:`rotation_bound` and :func:`accuracy_bound`;
        ``"superpose"`` — the same over all points, returning Σ|R x − y|²;
        ``"pairs"`` — the loop of :func:`qcp`; ``"all"`` — the loop of
        :func:`best_alignments`.

    Raises
    ------
    ModuleNotFoundError
        Without numba, naming the extra that installs it.
    """
    return _compile()


@compile_once
def _compile():
    numba = import_optional("numba", purpose="the OAMLM alignment kernels")
    jit = numba.njit(cache=True, nogil=True)
    qcp = {"_qcp_key": jit(_qcp_key_py), "_qcp_adjugate": jit(_qcp_adjugate_py),
           "_quaternion_rotation": jit(_quaternion_rotation_py)}
    rotation = jit(with_globals(_rotation_py, **qcp))
    superpose = jit(with_globals(_superpose_py, _rotation=rotation))
    rotation_bound = jit(_rotation_bound_py)
    accuracy_bound = jit(with_globals(_accuracy_bound_py, _rotation_bound=rotation_bound))
    return types.MappingProxyType(
        {
            "rotation": rotation,
            "qcp": types.MappingProxyType(qcp),
            "rotation_bound": rotation_bound,
            "accuracy_bound": accuracy_bound,
            "superpose": superpose,
            "pairs": jit(with_globals(_pairs_py, _superpose=superpose)),
            "all": jit(with_globals(_all_py, _rotation=rotation,
                                    _accuracy_bound=accuracy_bound)),
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


def _all_py(P, S, orders, rss, tol, max_newton, R, g, best, bound, n_tied):  # pragma: no cover
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
    # Σ|x_m|, Σ|x_m|² (and for y) over the rows summed, for the accuracy's error bound
    # (the orderings permute the rows, and keep row 0 first when it is skipped)
    sum_x, sq_x = np.zeros(S.shape[0]), np.zeros(S.shape[0])
    for j in range(S.shape[0]):
        for m in range(first, n_points):
            r2 = S[j, m, 0] ** 2 + S[j, m, 1] ** 2 + S[j, m, 2] ** 2
            sq_x[j] += r2
            sum_x[j] += np.sqrt(r2)
    sum_y, sq_y = np.zeros(P.shape[0]), np.zeros(P.shape[0])
    for i in range(P.shape[0]):
        for m in range(first, n_points):
            r2 = P[i, m, 0] ** 2 + P[i, m, 1] ** 2 + P[i, m, 2] ** 2
            sq_y[i] += r2
            sum_y[i] += np.sqrt(r2)
    n_orders = orders.shape[0]
    R_try = np.empty((3, 3))
    acc_try = np.empty(n_orders)  # every ordering's accuracy and p'(λ̂)
    dp_try = np.empty(n_orders)
    for i in range(P.shape[0]):
        y = P[i]
        for j in range(S.shape[0]):
            x = S[j]
            g_best = np.inf
            b = 0
            for o in range(n_orders):
                order = orders[o]
                dp_try[o] = _rotation(x, y, order, first, tol, max_newton, R_try)
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
                acc_try[o] = acc
                if acc < g_best:
                    g_best = acc
                    b = o
                    for a in range(3):
                        for c in range(3):
                            R[i, j, a, c] = R_try[a, c]
            # the orderings tied with the best within the accuracies' rounding, 2 E_b
            e = _accuracy_bound(0.5 * (sq_x[j] + sq_y[i]), dp_try[b], tol, sum_x[j], sum_y[i],
                                n_points, n_points - first, g_best)
            tied = 0
            for o in range(n_orders):
                if acc_try[o] - g_best <= 2.0 * e:
                    tied += 1
            if tied > 1:  # the mean of the tied rotations (computed again: the same bits)
                for a in range(3):
                    for c in range(3):
                        R[i, j, a, c] = 0.0
                for o in range(n_orders):
                    if acc_try[o] - g_best <= 2.0 * e:
                        _rotation(x, y, orders[o], first, tol, max_newton, R_try)
                        for a in range(3):
                            for c in range(3):
                                R[i, j, a, c] += R_try[a, c]
                for a in range(3):
                    for c in range(3):
                        R[i, j, a, c] /= tied
            g[i, j] = g_best
            best[i, j] = b
            bound[i, j] = e
            n_tied[i, j] = tied


# unit roundoff and γ_n = n u / (1 − n u) (Higham §3.1), constants of the bounds below
_U = float(np.finfo(np.float64).eps) / 2


def _gamma(n):
    return n * _U / (1 - n * _U)


_ORTH = np.sqrt(3.0) * (2 * _gamma(5) + _gamma(4)) + 3 * _gamma(4) * (1 + 2 * _gamma(5) + _gamma(4))
_R_MAX = 2 * np.sqrt(2.0) + _ORTH
_ROOT = 90 * _gamma(10)
_ADJ2 = 2 * np.sqrt(2.0) * 96 * _gamma(6)
_RES = np.sqrt(3.0) * _gamma(4)
_G4 = _gamma(4)


def _rotation_bound_py(kappa, n_terms, tol):  # pragma: no cover - compiled by numba
    """:func:`rotation_bound` (the compiled kernels call this one)."""
    h = n_terms * _U / (1 - n_terms * _U)  # forming H: ‖δH‖ ≤ γ_n λ̄
    root = _ROOT + 48.0 * tol * tol
    if not (kappa * 16.0 * h <= 1.0 and kappa * 24.0 * tol <= 1.0
            and kappa * kappa * 8.0 * root <= 1.0):  # also κ = inf, nan
        return _R_MAX
    bound = 32.0 * np.sqrt(6.0) * root * kappa * kappa + (32.0 * h + _ADJ2) * kappa + _ORTH
    return min(bound, _R_MAX)


def _accuracy_bound_py(lam, dp, tol, sum_x, sum_y, n_points, n_terms, g):  # pragma: no cover
    """:func:`accuracy_bound` from λ̄ and QCP's p'(λ̂) (the compiled kernels call this one)."""
    k = 3 * n_terms + 4
    rel = k * _U / (1 - k * _U)
    kappa = lam * lam * lam / dp if dp > 0.0 else np.inf
    dR = _rotation_bound(kappa, n_terms, tol)
    return ((dR + _RES) * sum_x + _G4 * sum_y) / n_points + rel * g


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


def _qcp_adjugate_py(n00, n11, n22, n33, n01, n02, n03, n12, n13, n23, lam):  # pragma: no cover
    """The largest column of adj(N − λI) and its squared norm: (best, q0, q1, q2, q3).

    The 2×2-minor (Laplace) expansion of the 4×4 adjugate of the symmetric A = N − λI;
    at λ = λ₁ every nonzero column is the optimal rotation's quaternion, unnormalised;
    ``best`` ~ 0 flags a multiple largest eigenvalue.
    """
    a00, a11, a22, a33 = n00 - lam, n11 - lam, n22 - lam, n33 - lam
    a01, a02, a03, a12, a13, a23 = n01, n02, n03, n12, n13, n23
    s0 = a00 * a11 - a01 * a01
    s1 = a00 * a12 - a01 * a02
    s2 = a00 * a13 - a01 * a03
    s3 = a01 * a12 - a11 * a02
    s4 = a01 * a13 - a11 * a03
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
    return best, q0, q1, q2, q3


def _quaternion_rotation_py(q0, q1, q2, q3, best, R):  # pragma: no cover - numba
    """Write to ``R`` (3, 3) the rotation of the unit quaternion q / √best."""
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


def _qcp_key_py(sxx, sxy, sxz, syx, syy, syz, szx, szy, szz):  # pragma: no cover - numba
    """Theobald's key matrix N from the sums S_ab = Σ x_a y_b, and its characteristic
    polynomial λ⁴ + c₂λ² + c₁λ + c₀ (Theobald 2005, eqs. 7–9).

    Returns the ten distinct entries of the symmetric N (n00, n11, n22, n33, n01, n02,
    n03, n12, n13, n23), then c₂, c₁, c₀: the one sequence of operations every QCP
    routine here shares, so the batched and the single-pair rotations agree bit for bit.
    """
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
    return n00, n11, n22, n33, n01, n02, n03, n12, n13, n23, c2, c1, c0


def _rotation_py(x, y, order, first, tol, max_newton, R):  # pragma: no cover - numba
    """Rotate the points x[order[first:]] onto y[first:] by QCP: writes R, returns p'(λ̂).

    Rows before ``first`` are left out of the sums (the caller passes 1 for
    a centre at the origin of both sets, whose terms are exact zeros). p'(λ̂) ≈
    Δ₂Δ₃Δ₄ gives the conditioning κ = λ̄³/p' of :func:`rotation_bound`; it is 0 where
    QCP cannot vouch for R (Newton not converged, the SVD fallback).
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
    n00, n11, n22, n33, n01, n02, n03, n12, n13, n23, c2, c1, c0 = _qcp_key(
        sxx, sxy, sxz, syx, syy, syz, szx, szy, szz)
    lam = g
    converged = False
    for _ in range(max_newton):
        lam2 = lam * lam
        p = (lam2 + c2) * lam2 + c1 * lam + c0
        dp = 4.0 * lam2 * lam + 2.0 * c2 * lam + c1
        if dp == 0.0:
            break
        step = p / dp
        lam -= step
        if abs(step) <= tol * abs(lam):
            converged = True
            break
    # p'(λ₁) = Δ₂Δ₃Δ₄, the conditioning κ = λ̄³/p' of rotation_bound; 0 where Newton
    # did not converge or the SVD fallback below takes over
    dp = (4.0 * lam * lam + 2.0 * c2) * lam + c1 if converged else 0.0
    # quaternion: the largest column of adj(N - lam I)
    best, q0, q1, q2, q3 = _qcp_adjugate(n00, n11, n22, n33, n01, n02, n03, n12, n13, n23, lam)
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
        dp = 0.0
    else:
        _quaternion_rotation(q0, q1, q2, q3, best, R)
    return dp


# The loops call `_superpose`, `_rotation`, `_rotation_bound` and `_accuracy_bound`: in
# pure Python (the oracles) these routines; kernels() compiles them with the compiled
# routines under those names.
_superpose = _superpose_py
_qcp_key = _qcp_key_py
_qcp_adjugate = _qcp_adjugate_py
_quaternion_rotation = _quaternion_rotation_py
_rotation = _rotation_py
_rotation_bound = _rotation_bound_py
_accuracy_bound = _accuracy_bound_py
