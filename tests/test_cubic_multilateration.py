"""The compiled cubic output stage of the MLM against its vectorised NumPy oracle.

``cubic_multilateration`` (one compiled pass with numba) and
``_cubic_multilateration_numpy`` (the vectorised closed form, kept as the oracle)
solve the same cubic (2.23) with their sums accumulated in different orders, so
they agree to the cubic's conditioning, not bitwise. :func:`assert_same_minimiser`
states how far: where the chosen minimum of (2.22) is simple and isolated, the two
roots lie within the first-order bounds of both; elsewhere (a near-multiple root,
two minima of nearly equal J) the objective (2.22) agrees to its rounding plus
the effect of the coefficients' errors.
"""

import numpy as np
import pytest
from _numerics import EPS, U, gamma
from hypothesis import given, settings
from hypothesis import strategies as st

import mlmlearn.multilateration as ml
from mlmlearn import MLM
from mlmlearn.multilateration import (
    _cubic_multilateration_numpy,
    _depressed_cubic_real_roots,
    cubic_multilateration,
)

pytest.importorskip("numba")


def cubic_errors(delta, t, y):
    """Per row: ``p``, ``q``, ``x = y - t̄``, bounds ``dp``, ``dq`` on the computed
    coefficients' errors, and ``ε_f`` on the cubic's value at ``x``.

    As in ``_numerics.cubic_root_bound`` (exact δ): the centring errs by
    ``es_k = eps(|t_k| + |t̄|) + γ_K mean|t|``, the K-term sums by ``γ_{K+2}`` of their
    magnitudes (any summation order); the computed root satisfies its computed
    cubic to ``2γ₄(|x|³ + |px| + |q|)``. So ``|f(x)| ≤ ε_f = |x| dp + dq + that``
    for the exact ``f(x) = x³ + px + q``. Power-of-two changes of units are exact
    and change none of this.
    """
    K = t.size
    mean = t.mean()
    s = t - mean
    es = EPS * (np.abs(t) + abs(mean)) + gamma(K) * np.abs(t).mean()
    d2 = delta**2
    p = (3 * s @ s - d2.sum(axis=1)) / K
    q = (d2 @ s - (s**2) @ s) / K
    x = y - mean
    g = gamma(K + 2)
    dp = (6 * np.abs(s) @ es + g * (3 * s @ s + d2.sum(axis=1))) / K
    dq = (d2 @ es + 3 * (s**2) @ es + g * (d2 @ np.abs(s) + np.abs(s) ** 3 @ np.ones(K))) / K
    eps_f = np.abs(x) * dp + dq + 2 * gamma(4) * (np.abs(x) ** 3 + np.abs(p * x) + np.abs(q))
    return p, q, x, dp, dq, eps_f


def objective(y, t, delta):
    """Eq. (2.22) per row, and ``γ_{K+4}`` of its terms' magnitudes (its rounding)."""
    r = (y[:, None] - t[None]) ** 2
    return (((r - delta**2) ** 2).sum(axis=1),
            gamma(t.size + 4) * ((r + delta**2) ** 2).sum(axis=1))


def assert_same_minimiser(delta, t, got, ref):
    """Both ``got`` and ``ref`` minimise (2.22), to the cubic's conditioning.

    First order, a computed root is within ``b = ε_f / |3x² + p| + u|y|`` of the
    exact one (``u|y|`` for adding t̄ back), valid where the quadratic term of the
    cubic cannot matter over that distance (``3|x| b + b² ≤ |3x² + p| / 2``). Where
    the chosen minimum is such a simple root of both and the other minimum of J
    (if any) is higher by more than twice the allowance ``E`` below, the roots must
    agree within ``b_got + b_ref``. Elsewhere J must agree within ``E``: its
    rounding at both points, ``K(2dp x² + 4dq|x|)`` at each (J - J(0) =
    ``K(x⁴ + 2px² + 4qx)``, so that is what the coefficients' errors change), and
    ``4K(ε_f,got + ε_f,ref)|x_got - x_ref|`` (``|J'| = 4K|f|`` between two points
    of a flat stretch where |f| is that small).

    Returns the rows held to the root bound.
    """
    delta = np.atleast_2d(delta)
    K = t.size
    p, q, x, dp, dq, ef = cubic_errors(delta, t, got)
    _, _, xr, _, _, efr = cubic_errors(delta, t, ref)
    curv, curv_r = np.abs(3 * x**2 + p), np.abs(3 * xr**2 + p)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 at an exact triple root
        b = ef / curv + U * np.abs(got)
        br = efr / curv_r + U * np.abs(ref)
    linear = (3 * np.abs(x) * b + b**2 <= curv / 2) & (3 * np.abs(xr) * br + br**2 <= curv_r / 2)
    Jg, rho_g = objective(got, t, delta)
    Jr, rho_r = objective(ref, t, delta)
    E = (rho_g + rho_r + K * (2 * dp * (x**2 + xr**2) + 4 * dq * (np.abs(x) + np.abs(xr)))
         + 4 * K * (ef + efr) * np.abs(x - xr))
    roots = _depressed_cubic_real_roots(p, q)
    costs = np.sort(np.where(np.isnan(roots), np.inf,
                             K * (roots**4 + 2 * p[:, None] * roots**2 + 4 * q[:, None] * roots)),
                    axis=1)
    isolated = costs[:, 1] - costs[:, 0] > 2 * E
    strict = linear & isolated
    bad = strict & ~(np.abs(got - ref) <= b + br)
    assert not bad.any(), (np.flatnonzero(bad), got[bad], ref[bad], (b + br)[bad])
    loose = ~strict & ~(np.abs(Jg - Jr) <= E)
    assert not loose.any(), (np.flatnonzero(loose), Jg[loose], Jr[loose], E[loose])
    return strict


def random_problem(rng, n, k, noise, scale=1.0, offset=0.0):
    t = rng.normal(scale=scale, size=k) + offset
    y = rng.normal(scale=scale, size=n) + offset
    delta = np.abs(np.abs(y[:, None] - t[None]) + noise * scale * rng.normal(size=(n, k)))
    return delta, t


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 60), noise=st.floats(0.0, 3.0))
def test_compiled_cubic_matches_the_numpy_oracle(seed, k, noise):
    rng = np.random.default_rng(seed)
    delta, t = random_problem(rng, 64, k, noise)
    strict = assert_same_minimiser(delta, t, cubic_multilateration(delta, t),
                                   _cubic_multilateration_numpy(delta, t))
    if k > 1:
        assert strict.mean() > 0.5  # a real test: most rows held to the root bound


def test_benchmark_sized_rows_match_the_oracle():
    """The benchmark's regime (K = 1 000, noisy distances), rows held to the root bound."""
    delta, t = random_problem(np.random.default_rng(0), 500, 1000, 0.05)
    strict = assert_same_minimiser(delta, t, cubic_multilateration(delta, t),
                                   _cubic_multilateration_numpy(delta, t))
    assert strict.all()


def _symmetric_pair(d):
    """t = (-1, 1), δ = (d₁, d₂): s = t, so p = 3 - (d₁² + d₂²)/2, q = (d₂² - d₁²)/2."""
    return np.array([-1.0, 1.0]), np.atleast_2d(d)


@pytest.mark.parametrize("case", [
    "double root beside the minimum",  # x³ - 3x + 2 = (x - 1)²(x + 2): minimum at -2
    "double root mirrored",  # (x + 1)²(x - 2): minimum at 2
    "triple root",  # p = q = 0: J flat to fourth order at the minimum
    "two equal minima",  # q = 0, p = -1: roots 0, ±1, J(1) = J(-1) exactly
    "two nearly equal minima",
    "one reference",  # K = 1: minima at t ± δ, equal
    "equal references",  # all s_k = 0
    "zero distances",
])
def test_adversarial_cubics(case):
    if case == "double root beside the minimum":
        t, delta = _symmetric_pair([2.0, np.sqrt(8.0)])
    elif case == "double root mirrored":
        t, delta = _symmetric_pair([np.sqrt(8.0), 2.0])
    elif case == "triple root":
        t, delta = _symmetric_pair([np.sqrt(3.0), np.sqrt(3.0)])
    elif case == "two equal minima":
        t, delta = _symmetric_pair([2.0, 2.0])
    elif case == "two nearly equal minima":
        t, delta = _symmetric_pair(np.column_stack([np.full(5, 2.0),
                                                    2.0 + np.logspace(-15, -3, 5)]))
    elif case == "one reference":
        t, delta = np.array([0.7]), np.array([[0.0], [0.3], [5.0]])
    elif case == "equal references":
        t, delta = np.full(4, 2.5), np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0]])
    else:
        t, delta = np.array([0.0, 1.0, 3.0]), np.zeros((2, 3))
    got = cubic_multilateration(delta, t)
    assert np.all(np.isfinite(got))
    assert_same_minimiser(delta, t, got, _cubic_multilateration_numpy(delta, t))
    if case.startswith("double root"):  # the minimum is the simple root, far from the double
        np.testing.assert_allclose(np.abs(got), 2.0, rtol=1e-12)
        assert np.sign(got[0]) == (-1 if case.endswith("minimum") else 1)


@pytest.mark.parametrize("offset", [1e4, 1e8, -3e12])
def test_large_offset_small_spread(offset):
    """References far from 0 relative to their spread: in the uncentred cubic the
    leading coefficient K is tiny beside Σt³ (np.roots on it loses digits); the
    centred closed form loses only the centring's rounding, which the bound counts."""
    delta, t = random_problem(np.random.default_rng(1), 200, 30, 0.1, offset=offset)
    strict = assert_same_minimiser(delta, t, cubic_multilateration(delta, t),
                                   _cubic_multilateration_numpy(delta, t))
    assert strict.mean() > 0.9


@pytest.mark.parametrize("exponent", [-400, -120, -30, -1, 1, 30, 150, 400])
def test_power_of_two_scaling_is_exact(exponent):
    """The compiled stage works in units of a power of two: scaling δ and t by 2^e
    scales y exactly, also far outside where δ⁴ or the discriminant's (q/2)² would
    over- or underflow in the given units (the NumPy oracle returns garbage there)."""
    rng = np.random.default_rng(2)
    delta, t = random_problem(rng, 100, 20, 1.5)  # noisy: many rows with three roots
    base = cubic_multilateration(delta, t)
    c = np.ldexp(1.0, exponent)
    np.testing.assert_array_equal(cubic_multilateration(delta * c, t * c), base * c)


def test_layouts_and_dtypes_give_the_same_rows():
    delta, t = random_problem(np.random.default_rng(3), 50, 40, 0.5)
    base = cubic_multilateration(delta, t)
    np.testing.assert_array_equal(cubic_multilateration(np.asfortranarray(delta), t), base)
    np.testing.assert_array_equal(cubic_multilateration(np.repeat(delta, 2, axis=0)[::2], t),
                                  base)
    np.testing.assert_array_equal(cubic_multilateration(delta.tolist(), list(t)), base)
    d32 = delta.astype(np.float32)
    np.testing.assert_array_equal(cubic_multilateration(d32, t),
                                  cubic_multilateration(d32.astype(np.float64), t))
    assert cubic_multilateration(delta[:0], t).shape == (0,)


def test_non_finite_rows_give_nan_and_leave_the_others_alone():
    delta, t = random_problem(np.random.default_rng(4), 6, 5, 0.2)
    bad = delta.copy()
    bad[1, 2] = np.nan
    bad[4, 0] = np.inf
    got = cubic_multilateration(bad, t)
    assert np.isnan(got[[1, 4]]).all()
    np.testing.assert_array_equal(np.delete(got, [1, 4]),
                                  np.delete(cubic_multilateration(delta, t), [1, 4]))
    with np.errstate(invalid="ignore"):
        oracle = _cubic_multilateration_numpy(bad, t)
    np.testing.assert_array_equal(np.isnan(oracle), np.isnan(got))


@pytest.mark.parametrize("delta_shape, t_shape", [((3, 4), (5,)), ((4,), (4,)),
                                                  ((3, 4), (4, 1)), ((3, 0), (0,))])
def test_shapes_are_checked(delta_shape, t_shape):
    with pytest.raises(ValueError, match=r"delta of shape .*t of shape"):
        cubic_multilateration(np.ones(delta_shape), np.ones(t_shape))


def test_mlm_without_numba_uses_the_numpy_stage(monkeypatch):
    """Without numba (not a core dependency) MLM predicts with the NumPy version, to
    the same minimisers."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 3))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    model = MLM(references=40).fit(X, y)
    compiled = model.predict(X)
    monkeypatch.setattr(ml, "_cubic_kernel", lambda: None)
    fallback = model.predict(X)
    from mlmlearn._distances import euclidean_distances

    delta = euclidean_distances(X, model.references_) @ model.coef_
    strict = assert_same_minimiser(delta, model.output_references_[:, 0], compiled, fallback)
    assert strict.all()
