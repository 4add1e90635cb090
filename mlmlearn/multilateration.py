"""Output-space solvers of the MLM: find the point whose distances to the output
references best match the predicted ones (thesis eq. 2.21–2.23).

All solvers work on every sample at once; none loops over samples in Python.

- :func:`cubic_multilateration` — scalar outputs: the exact minimiser of (2.22)
  from the closed-form roots of its cubic stationarity condition (2.23). With
  numba (mlmlearn's ``atoms`` extra) it is one compiled pass over the
  predictions; without it, the vectorised NumPy version
  (``_cubic_multilateration_numpy``), which stays as the oracle of the compiled one.
- :func:`linear_multilateration` — any output dimension: the linear
  least-squares solution obtained by subtracting the mean of the equations
  ``|y - t_k|² = δ_k²`` (one shared pseudo-inverse for all samples).
- :func:`nonlinear_multilateration` — any output dimension: the nonlinear
  least-squares minimiser of ``Σ_k (|y - t_k|² - δ_k²)²`` by batched
  Levenberg–Marquardt started from the linear solution. Its residuals,
  gradient and Gauss–Newton matrix are evaluated from per-sample moments, so
  an iteration costs O(p³) per sample, independent of the number of references.
"""

import math
import types

import numpy as np

from ._optional import compile_once

__all__ = ["cubic_multilateration", "linear_multilateration", "nonlinear_multilateration"]


def cubic_multilateration(delta, t):
    """Minimise ``J(y) = Σ_k ((y - t_k)² - δ_k²)²`` (eq. 2.22) for every sample.

    Setting ``J'(y) = 0`` gives the cubic of Mesquita et al. (eq. 2.23),
    ``K y³ - 3 Σt_k y² + Σ(3t_k² - δ_k²) y + Σ(δ_k² t_k - t_k³) = 0``.
    (The constant term printed in the thesis and paper II, ``Σ(δ_k² - t_k³)``,
    drops a factor ``t_k``; this is the derivative of (2.22).) It is solved in
    closed form after centring ``y = x + t̄``, which removes the quadratic
    term, ``x³ + p x + q = 0`` with ``p = (3Σs_k² - Σδ_k²)/K`` and
    ``q = (Σδ_k² s_k - Σs_k³)/K``, ``s = t - t̄``: one real root by Cardano's
    formula in its cancellation-free form, three by the trigonometric formula;
    each root is polished by a Newton step, and the real root with the lowest
    ``J`` is kept, ``J(x) - J(0) = K (x⁴ + 2p x² + 4q x)``.

    The predictions enter only through ``Σδ_k²`` and ``Σδ_k² s_k``. With numba
    installed (mlmlearn's ``atoms`` extra) one compiled pass reads each row of
    ``delta`` once, accumulates both sums and solves that row's cubic, without
    an N×K temporary; the sums may be accumulated in any order (rounding within
    ``γ_K`` of ``Σδ²`` and ``Σδ²|s|``, as for any summation). It works in units
    of the power of two ``σ`` nearest above ``max|s_k|`` and compares the roots'
    costs divided by ``r⁴`` (``r = √(-p/3)``), so scaling ``delta`` and ``t`` by a
    power of two scales ``y`` exactly, at any magnitude whose squares do not
    overflow in those units. Without numba the vectorised NumPy version computes
    the same closed form (in the given units).

    Parameters
    ----------
    delta : array-like of shape (n_samples, K)
        Predicted output-space distances ``d_inᵀB`` (eq. 2.21).
    t : array-like of shape (K,)
        Output references.

    Returns
    -------
    y : ndarray of shape (n_samples,)
        NaN for a sample whose ``delta`` row is not finite.

    Raises
    ------
    ValueError
        If ``delta`` is not 2-D, ``t`` not 1-D, they disagree on K, or K = 0.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([0.0, 1.0, 3.0])
    >>> cubic_multilateration(np.abs(2.0 - t)[None, :], t)
    array([2.])
    """
    delta, t = _check_cubic_arguments(delta, t)
    kernel = _cubic_kernel()
    if kernel is None:
        return _cubic_multilateration_numpy(delta, t)
    mean = t.mean()
    s = t - mean
    spread = np.abs(s).max()
    # σ = 2^e: dividing by it is exact, so the sums and roots only change units
    sigma = math.ldexp(1.0, math.frexp(spread)[1]) if 0.0 < spread < np.inf else 1.0
    s = s / sigma
    x = np.empty(delta.shape[0])
    kernel(np.ascontiguousarray(delta), 1.0 / sigma, s, 3.0 * (s @ s), np.square(s) @ s, x)
    return x * sigma + mean


def _check_cubic_arguments(delta, t):
    delta = np.asarray(delta, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if delta.ndim != 2 or t.ndim != 1 or delta.shape[1] != t.size or t.size == 0:
        raise ValueError(
            "cubic_multilateration needs delta of shape (n_samples, K) and t of shape (K,) "
            f"with K >= 1; got delta of shape {delta.shape} and t of shape {t.shape}"
        )
    return delta, t


def _cubic_multilateration_numpy(delta, t):
    """:func:`cubic_multilateration` vectorised in NumPy: the oracle of the compiled pass.

    Forms the N×K array of ``δ²`` and its products with ``(1, s)`` in one
    matrix product, then solves all cubics at once
    (:func:`_depressed_cubic_real_roots`).
    """
    delta, t = _check_cubic_arguments(delta, t)
    k = t.size
    mean = t.mean()
    s = t - mean
    # Σδ² and Σδ²s in one pass over the N×K predictions
    sums = np.square(delta) @ np.column_stack([np.ones(k), s])
    p = (3.0 * (s @ s) - sums[:, 0]) / k
    q = (sums[:, 1] - np.square(s) @ s) / k
    roots = _depressed_cubic_real_roots(p, q)
    cost = np.where(np.isnan(roots), np.inf, roots**4 + 2.0 * p[:, None] * roots**2
                    + 4.0 * q[:, None] * roots)
    best = roots[np.arange(roots.shape[0]), np.argmin(cost, axis=1)]
    return best + mean


def _depressed_cubic_real_roots(p, q):
    """Real roots of ``x³ + p x + q = 0`` per sample; NaN where fewer than three."""
    n = p.shape[0]
    roots = np.full((n, 3), np.nan)
    half_q = 0.5 * q
    third_p = p / 3.0
    disc = half_q**2 + third_p**3
    three = disc < 0.0  # implies p < 0
    one = ~three
    # one real root: u³ = -q/2 - sign(q)·√disc has no cancellation, v = -p/(3u)
    sq = np.sqrt(disc[one])
    u = np.cbrt(-half_q[one] - np.copysign(sq, half_q[one]))
    with np.errstate(divide="ignore", invalid="ignore"):
        roots[one, 0] = np.where(u != 0.0, u - third_p[one] / u, 0.0)
    # three real roots: x = 2r cos(θ - 2πj/3), r = √(-p/3), cos 3θ = -q / (2r³)
    r = np.sqrt(-third_p[three])
    theta = np.arccos(np.clip(-half_q[three] / r**3, -1.0, 1.0)) / 3.0
    shifts = np.array([0.0, 2.0, 4.0]) * np.pi / 3.0
    roots[three] = 2.0 * r[:, None] * np.cos(theta[:, None] - shifts[None, :])
    # one Newton step polishes rounding in either formula
    f = roots**3 + p[:, None] * roots + q[:, None]
    fp = 3.0 * roots**2 + p[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        polished = roots - f / fp
    f_new = polished**3 + p[:, None] * polished + q[:, None]
    better = np.isfinite(polished) & (np.abs(f_new) < np.abs(f))
    return np.where(better, polished, roots)


# ------------------------------------------------------- the compiled cubic stage
def _row_sums_py(row, scale, s):  # pragma: no cover - compiled by numba
    """``(Σ (c·row_k)², Σ (c·row_k)² s_k)``, ``c = scale``; compiled with
    reassociation, so it vectorises."""
    a = 0.0
    b = 0.0
    for j in range(row.shape[0]):
        d = row[j] * scale
        d2 = d * d
        a += d2
        b += d2 * s[j]
    return a, b


def _polish_py(x, p, q):  # pragma: no cover - compiled by numba
    """One Newton step on ``x³ + px + q``, kept where it lowers the residual."""
    f = x * x * x + p * x + q
    step = x - f / (3.0 * x * x + p)
    if np.isfinite(step) and abs(step * step * step + p * step + q) < abs(f):
        return step
    return x


def _cubic_rows_py(delta, scale, s, three_ss, sss, out):  # pragma: no cover - numba
    """Per row of ``delta``: the sums, ``p``, ``q`` and the chosen root ``x`` into ``out``.

    ``delta`` enters multiplied by ``scale``, in the units of ``s`` (the centred
    references). The closed form and the selection rule of
    :func:`_depressed_cubic_real_roots` and :func:`_cubic_multilateration_numpy`,
    one sample at a time: the lowest ``J(x) - J(0) ∝ x⁴ + 2p x² + 4q x`` among the
    real roots, the first on ties (a NaN cost counts as lowest, as with
    ``np.argmin``). With three roots it is compared as ``z⁴ - 6z² - 8c z``,
    ``z = x/r``, ``c = -q/(2r³)``: the same cost divided by ``r⁴``, which cannot
    overflow (``|z| ≤ 2``).
    """
    n, k = delta.shape
    shift = 2.0 * math.pi / 3.0
    for i in range(n):
        a, b = _row_sums(delta[i], scale, s)
        p = (three_ss - a) / k
        q = (b - sss) / k
        half_q = 0.5 * q
        third_p = p / 3.0
        disc = half_q * half_q + third_p * third_p * third_p
        if disc < 0.0:  # three real roots: 2r cos(θ - 2πj/3), r = √(-p/3)
            r = math.sqrt(-third_p)
            c = -half_q / (r * r * r)
            theta = math.acos(min(max(c, -1.0), 1.0)) / 3.0
            best = _polish(2.0 * r * math.cos(theta), p, q)
            z = best / r
            best_cost = z * z * (z * z - 6.0) - 8.0 * c * z
            for j in range(1, 3):
                x = _polish(2.0 * r * math.cos(theta - j * shift), p, q)
                z = x / r
                cost = z * z * (z * z - 6.0) - 8.0 * c * z
                if cost < best_cost or (np.isnan(cost) and not np.isnan(best_cost)):
                    best, best_cost = x, cost
            out[i] = best
        else:  # one real root: u³ = -q/2 - sign(q)·√disc, x = u - p/(3u)
            u = np.cbrt(-half_q - math.copysign(math.sqrt(disc), half_q))
            out[i] = _polish(u - third_p / u if u != 0.0 else 0.0, p, q)


# the pure-Python helpers; the compiled kernel is linked to compiled ones (_with_globals)
_row_sums, _polish = _row_sums_py, _polish_py


def _cubic_kernel():
    """The compiled :func:`_cubic_rows_py`, or ``None`` without numba (compiled once)."""
    return _compile_cubic()


@compile_once
def _compile_cubic():
    try:
        import numba
    except ImportError:
        return None
    row_sums = numba.njit(_row_sums_py, cache=True, nogil=True,
                          fastmath={"reassoc", "contract"})
    polish = numba.njit(_polish_py, cache=True, nogil=True, error_model="numpy")
    rows = _with_globals(_cubic_rows_py, _row_sums=row_sums, _polish=polish)
    return numba.njit(rows, cache=True, nogil=True, error_model="numpy")


def _with_globals(function, **replaced):
    """A copy of ``function`` that sees ``replaced`` among its globals.

    numba freezes the globals a function reads when it compiles it: this links
    the compiled helpers into the compiled kernel while the module keeps its
    pure-Python functions (numba's on-disk cache keys on this file).
    """
    copy = types.FunctionType(function.__code__, {**function.__globals__, **replaced},
                              function.__name__, function.__defaults__, function.__closure__)
    copy.__qualname__ = function.__qualname__
    return copy


def _centred(T):
    T = np.asarray(T, dtype=np.float64)
    centre = T.mean(axis=0)
    return T - centre, centre


def linear_multilateration(delta, T):
    """Linear least-squares multilateration for outputs of any dimension.

    Subtracting the mean over ``k`` of ``|y|² - 2 y·s_k + |s_k|² = δ_k²`` (with
    ``s_k = t_k - t̄``) removes ``|y|²`` and leaves ``-2 S y = δ² - |s|²`` up to
    a constant that the centred ``S`` annihilates, solved with the
    pseudo-inverse of ``S`` shared by all samples.

    Parameters
    ----------
    delta : ndarray of shape (n_samples, K)
        Predicted output-space distances.
    T : ndarray of shape (K, n_outputs)
        Output references.

    Returns
    -------
    Y : ndarray of shape (n_samples, n_outputs)
    """
    S, centre = _centred(T)
    rhs = np.square(delta) - np.einsum("ij,ij->i", S, S)[None, :]
    return rhs @ np.linalg.pinv(-2.0 * S).T + centre


def nonlinear_multilateration(delta, T, *, max_iter=20, tol=1e-10, y0=None):
    """Nonlinear least-squares multilateration, batched Levenberg–Marquardt.

    Minimises ``J(y) = Σ_k r_k²`` with ``r_k = |y - t_k|² - δ_k²`` — the
    multilateration objective (2.22) for vector outputs, and the residual that
    per-sample solvers such as scikit-mlm's pass to
    ``scipy.optimize.least_squares`` — for all samples together. With
    ``c_k = |s_k|² - δ_k²`` in centred coordinates (``Σ s_k = 0``) and
    ``a = |y|²``, the per-sample moments ``Σc``, ``Σc²``, ``Σ c_k s_k`` and the
    shared ``M = SᵀS`` give ``J = K a² + 2a Σc + Σc² - 4 y·Σc s + 4 yᵀM y``,
    ``Jacᵀr = 2 (y (K a + Σc) + 2 M y - Σc s)`` and
    ``JacᵀJac = 4 (K y yᵀ + M)``.

    Parameters
    ----------
    delta : ndarray of shape (n_samples, K)
        Predicted output-space distances.
    T : ndarray of shape (K, n_outputs)
        Output references.
    max_iter : int, default=20
        Levenberg–Marquardt iterations at most.
    tol : float, default=1e-10
        A sample stops when its step is below ``tol·(1 + |y|)``.
    y0 : ndarray of shape (n_samples, n_outputs), default=None
        Starting points; the linear least-squares solution by default.

    Returns
    -------
    Y : ndarray of shape (n_samples, n_outputs)
    """
    S, centre = _centred(T)
    k, dim = S.shape
    y = linear_multilateration(delta, T) if y0 is None else np.array(y0, dtype=np.float64)
    y = y - centre
    c = np.einsum("ij,ij->i", S, S)[None, :] - np.square(delta)
    c1, c2, cs = c.sum(axis=1), np.einsum("ij,ij->i", c, c), c @ S
    M = S.T @ S
    eye = np.eye(dim)

    J = _cost(y, k, c1, c2, cs, M)
    lam = np.full(y.shape[0], 1e-3 * (4.0 * np.trace(M) / dim + 1e-300))
    active = np.ones(y.shape[0], dtype=bool)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        ya = y[idx]
        a = np.einsum("ij,ij->i", ya, ya)
        grad = 2.0 * (ya * (k * a + c1[idx])[:, None] + 2.0 * ya @ M - cs[idx])
        H = 4.0 * (k * ya[:, :, None] * ya[:, None, :] + M[None])
        H += lam[idx, None, None] * eye[None]
        step = -np.linalg.solve(H, grad[:, :, None])[:, :, 0]
        trial = ya + step
        J_trial = _cost(trial, k, c1[idx], c2[idx], cs[idx], M)
        ok = J_trial <= J[idx]
        y[idx[ok]] = trial[ok]
        J[idx[ok]] = J_trial[ok]
        lam[idx] = np.where(ok, lam[idx] / 3.0, lam[idx] * 4.0)
        small = np.linalg.norm(step, axis=1) <= tol * (1.0 + np.linalg.norm(ya, axis=1))
        active[idx[small]] = False
    return y + centre


def _cost(y, k, c1, c2, cs, M):
    """``J`` of :func:`nonlinear_multilateration` from the moments, one value per row of ``y``."""
    a = np.einsum("ij,ij->i", y, y)
    return (k * a * a + 2.0 * a * c1 + c2 - 4.0 * np.einsum("ij,ij->i", y, cs)
            + 4.0 * np.einsum("ij,jk,ik->i", y, M, y))
