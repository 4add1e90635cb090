"""The OAMLM alignment core: QCP rotations against the SVD (Kabsch) oracle; ties."""

import itertools

import numpy as np
import pytest
from _numerics import gamma, superposition_bounds
from hypothesis import assume, given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")
from mlmlearn.oamlm._superpose import kabsch, qcp  # noqa: E402


def _residual(X, Y, R):
    diff = np.einsum("bkj,bij->bki", X, R) - Y
    return np.sqrt((diff**2).sum(axis=(1, 2)) / X.shape[1])


@pytest.mark.parametrize("n_points", [2, 3, 4, 7, 13])
def test_qcp_reaches_the_kabsch_optimum_with_proper_rotations(n_points):
    rng = np.random.default_rng(n_points)
    X = rng.normal(size=(3000, n_points, 3))
    Y = rng.normal(size=(3000, n_points, 3))
    X -= X.mean(axis=1, keepdims=True)
    Y -= Y.mean(axis=1, keepdims=True)
    R_svd, rmsd_svd = kabsch(X, Y)
    R, rmsd = qcp(X, Y)
    # both optimal to their error bounds (rotation error times |X|, or, for multiple
    # eigenvalues such as the collinear n_points=2, the objective's loss under the
    # methods' backward errors), in the root of the summed squares
    b = superposition_bounds(X, Y)
    root = np.sqrt(n_points)
    gap = b.value_gap(rmsd * root, "qcp", rmsd_svd * root, "svd") / root
    assert np.all(np.abs(rmsd - rmsd_svd) <= gap)
    # the same rotation, its residual summed in two orders: twice the rounding
    rounding = (b.rounding + b.sum_rounding * (b.nX + b.nY)) / root
    assert np.all(np.abs(_residual(X, Y, R) - rmsd) <= 2 * rounding)
    quaternion = b.quaternion  # rotations from a unit quaternion (not the SVD fallback)
    assert quaternion.any() or n_points == 2
    R_q = R[quaternion]
    assert np.all(np.abs(np.linalg.det(R_q) - 1.0) <= b.det)
    orthogonality = np.abs(R_q @ R_q.transpose(0, 2, 1) - np.eye(3))
    assert np.all(orthogonality <= b.orthogonality)
    assert np.all(np.linalg.det(R_svd) > 0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_points=st.integers(3, 12))
def test_qcp_recovers_an_exact_rotation(seed, n_points):
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(1, n_points, 3))
    R0 = Rotation.random(random_state=seed).as_matrix()
    Y = X @ R0.T
    # the data's errors: Y rounded (γ₃|X||R0| per entry) and R0 orthogonal only to
    # rounding (its distance from the nearest rotation is at most ‖R0ᵀR0 − I‖_F)
    off = np.linalg.norm(R0.T @ R0 - np.eye(3))
    dY = gamma(3) * np.linalg.norm(np.abs(X[0]) @ np.abs(R0).T) + np.linalg.norm(X) * off
    b = superposition_bounds(X, Y, dY=dY)
    R, rmsd = qcp(X, Y)
    assert np.linalg.norm(R[0] - R0) <= b.rotation["qcp"][0] + off
    # r* of the exact data is 0; the computed one is within the value bound
    r = rmsd[0] * np.sqrt(n_points)
    assert r <= b.value_gap(np.array([r]), "qcp", np.array([0.0]), "qcp")[0]


def test_reflected_sets_get_a_rotation_not_a_mirror():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 5, 3))
    Y = X * np.array([1.0, 1.0, -1.0])  # mirror images
    R, rmsd = qcp(X, Y)
    _, rmsd_svd = kabsch(X, Y)
    b = superposition_bounds(X, Y)
    assert np.all(np.abs(np.linalg.det(R[b.quaternion]) - 1.0) <= b.det)
    assert np.all(np.linalg.det(R) > 0)
    root = np.sqrt(5)
    gap = b.value_gap(rmsd * root, "qcp", rmsd_svd * root, "svd") / root
    assert np.all(np.abs(rmsd - rmsd_svd) <= gap)
    assert np.all(rmsd > 1e-3)


def test_degenerate_sets():
    X = np.zeros((1, 3, 3))
    R, rmsd = qcp(X, X)
    np.testing.assert_allclose(R[0], np.eye(3))
    assert rmsd[0] == 0.0
    line = np.array([[[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]])
    other = line[..., [1, 0, 2]]
    R, rmsd = qcp(line, other)
    # a multiple eigenvalue: no rotation is unique, but the objective (optimum 0) is
    # reached to the methods' backward errors
    b = superposition_bounds(line, other)
    r = rmsd * np.sqrt(3)
    assert r[0] <= b.value_gap(r, "qcp", np.zeros(1), "svd")[0]


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\(n_pairs, n_points, 3\)"):
        qcp(np.zeros((2, 3, 3)), np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match=r"\(n_pairs, n_points, 3\)"):
        kabsch(np.zeros((2, 3, 2)), np.zeros((2, 3, 2)))


@pytest.mark.parametrize("rss", [False, True])
def test_best_alignments_equal_the_looped_svd_oracle(rss):
    import itertools

    from mlmlearn.oamlm._superpose import best_alignments

    rng = np.random.default_rng(7)
    m = 3
    P = rng.normal(size=(15, m + 1, 3))
    S = rng.normal(size=(11, m + 1, 3))
    P[:, 0] = S[:, 0] = 0.0  # centred on the atom
    orders = np.array([(0, *(1 + np.array(o))) for o in itertools.permutations(range(m))])
    R, g, best = best_alignments(P, S, orders, rss=rss)
    n = m + 1
    for i in range(len(P)):
        for j in range(len(S)):
            X = S[j][orders]  # (n_orderings, n, 3): the reference in each ordering
            Y = np.broadcast_to(P[i], X.shape)
            R_svd, _ = kabsch(X, Y)
            residual = Y - np.einsum("okj,oij->oki", X, R_svd)
            b = superposition_bounds(X, Y)
            rounding = b.rounding + b.sum_rounding * (b.nX + b.nY)
            if rss:  # eq. (2.26): the optimal value itself, √Σ|Rx − y|² / n
                r = np.sqrt((residual**2).sum(axis=(1, 2)))
                scores = r / n
                bound = b.value_gap(r, "qcp", r, "svd") / n
            else:  # eq. (2.25) at the rotation: moves by |δR| Σ|x_m| / n, plus rounding
                norms = np.linalg.norm(residual, axis=2)
                scores = norms.sum(axis=1) / n
                rotation = b.rotation["qcp"] + b.rotation["svd"]
                size = np.linalg.norm(X, axis=2).sum(axis=1) + np.linalg.norm(Y, axis=2).sum(axis=1)
                bound = (rotation * np.linalg.norm(X, axis=2).sum(axis=1)
                         + 2 * (gamma(4) * np.sqrt(3) + gamma(n + 4)) * size) / n
            # the minimum over orderings moves by at most the largest of their bounds
            assert abs(g[i, j] - scores.min()) <= bound.max()
            second = np.partition(scores, 1)[1]
            if second - scores.min() > 2 * bound.max():  # no near tie between orderings
                assert best[i, j] == int(np.argmin(scores))
            o = best[i, j]
            mine = np.linalg.norm(P[i] - X[o] @ R[i, j].T)
            theirs = np.linalg.norm(residual[o])
            limit = b.nX[o] * (b.rotation["qcp"][o] + b.rotation["svd"][o]) + 2 * rounding[o]
            assert abs(mine - theirs) <= limit


def test_compiled_loops_equal_their_pure_python_versions():
    """The loops compile from the module's Python functions, which stay the oracles."""
    import itertools

    from mlmlearn.oamlm import _superpose

    rng = np.random.default_rng(11)
    P, S = rng.normal(size=(4, 4, 3)), rng.normal(size=(3, 4, 3))
    orders = np.array([(0, *(1 + np.array(o))) for o in itertools.permutations(range(3))])
    compiled = _superpose.best_alignments(P, S, orders, return_ties=True)
    R, g, best = np.empty((4, 3, 3, 3)), np.empty((4, 3)), np.empty((4, 3), dtype=np.int64)
    bound, tied = np.empty((4, 3)), np.empty((4, 3), dtype=np.int64)
    _superpose._all_py(P, S, orders, False, 1e-12, 50, R, g, best, bound, tied)  # pure Python
    # the same IEEE-754 double operations in the same order: numba compiles without
    # fastmath (no reassociation, no contraction into fused multiply-adds) and its sqrt
    # is correctly rounded, as numpy's is, so the results agree to the last bit (these
    # pairs take the quaternion path, not the LAPACK fallback)
    X = S[:, None][:, :, orders].reshape(-1, 4, 3)
    Y = np.repeat(P, len(S) * len(orders), axis=0)
    assert superposition_bounds(np.tile(X, (len(P), 1, 1)), Y).quaternion.all()
    np.testing.assert_array_equal(compiled[0], R)
    np.testing.assert_array_equal(compiled[1], g)
    np.testing.assert_array_equal(compiled[2], best)
    np.testing.assert_array_equal(compiled[3], bound)
    np.testing.assert_array_equal(compiled[4], tied)
    # compiling rebinds nothing in the module
    assert _superpose._superpose is _superpose._superpose_py
    assert _superpose._rotation_bound is _superpose._rotation_bound_py


def test_a_cold_compile_from_many_threads_gives_one_set_of_kernels():
    """Four threads start aligning at once on an empty kernel cache (a first n_jobs > 1 fit)."""
    import itertools
    import threading

    from mlmlearn.oamlm import _gold_thiolate, _superpose

    rng = np.random.default_rng(3)
    P, S = rng.normal(size=(5, 4, 3)), rng.normal(size=(6, 4, 3))
    P[:, 0] = S[:, 0] = 0.0
    orders = np.array([(0, *(1 + np.array(o))) for o in itertools.permutations(range(3))])
    expected = _superpose.best_alignments(P, S, orders)[1]
    _superpose._compile.cache_clear()
    _gold_thiolate._compile.cache_clear()
    n = 4
    start = threading.Barrier(n)
    results, errors = [None] * n, []

    def work(k):
        try:
            start.wait()
            kernels = _superpose.kernels()
            core = _gold_thiolate._core_kernel()
            _, g, _ = _superpose.best_alignments(P, S, orders)
            results[k] = (kernels, core, g)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert all(r is not None for r in results)
    assert all(r[0] is results[0][0] and r[1] is results[0][1] for r in results)
    for r in results:
        np.testing.assert_array_equal(r[2], expected)


def test_without_numba_the_error_names_the_extra(monkeypatch):
    import sys

    from mlmlearn.oamlm import _superpose

    monkeypatch.setitem(sys.modules, "numba", None)
    _superpose._compile.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match=r"numba.*pip install \"\.\[atoms\]\""):
            _superpose.qcp(np.zeros((1, 3, 3)), np.zeros((1, 3, 3)))
    finally:
        _superpose._compile.cache_clear()  # the next caller compiles with numba again


# ------------------------------------------------------------- conditioning and ties
def _pairs_with_gaps(seed, n_pairs=400, n_points=5):
    """Random centred pairs, a third of them squeezed towards a plane or a line (large κ)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_pairs, n_points, 3))
    squeeze = np.ones((n_pairs, 1, 3))
    squeeze[: n_pairs // 3, 0, 2] = 10.0 ** rng.uniform(-4, 0, n_pairs // 3)
    squeeze[: n_pairs // 6, 0, 1] = 10.0 ** rng.uniform(-3, 0, n_pairs // 6)
    X = X * squeeze
    Y = X @ np.linalg.qr(rng.normal(size=(3, 3)))[0].T + 0.3 * rng.normal(size=X.shape)
    X[:, 0] = Y[:, 0] = 0.0  # a centre at the origin of both, as the rules build them
    return X, Y


def _qcp_with_kappa(X, Y):
    """QCP's rotations of the points after the centre, and κ = λ̄³/p'(λ̂) (inf for p' = 0)."""
    from mlmlearn.oamlm._superpose import _rotation_py

    R = np.empty((len(X), 3, 3))
    dp = np.array([_rotation_py(x, y, np.arange(x.shape[0]), 1, 1e-12, 50, r)
                   for x, y, r in zip(X, Y, R, strict=True)])
    lam = 0.5 * ((X[:, 1:] ** 2).sum(axis=(1, 2)) + (Y[:, 1:] ** 2).sum(axis=(1, 2)))
    with np.errstate(divide="ignore"):
        return R, np.where(dp > 0, lam**3 / np.where(dp > 0, dp, 1.0), np.inf)


@pytest.mark.parametrize("seed", [0, 1])
def test_kappa_is_the_conditioning_and_rotation_bound_covers_qcp(seed):
    """κ̂ = λ̄³/p'(λ̂) (QCP returns p') against λ̄³/(Δ₂Δ₃Δ₄) from the SVD; R̂ within
    rotation_bound of R*."""
    from mlmlearn.oamlm._superpose import rotation_bound

    X, Y = _pairs_with_gaps(seed)
    R, kappa = _qcp_with_kappa(X, Y)
    n_terms = X.shape[1] - 1
    b = superposition_bounds(X[:, 1:], Y[:, 1:])
    lam = 0.5 * (b.nX**2 + b.nY**2)
    D2, D3, D4 = b.gaps
    exact = lam**3 / (D2 * D3 * D4)
    finite = np.isfinite(kappa)
    assert finite.mean() > 0.9 and np.all(exact[~finite] > 1e6)  # inf only where degenerate
    # p'(λ̂) = Δ₂Δ₃Δ₄ + O(δλ p'') + the coefficients' rounding (≤ 64 γ₁₀ λ̄³); the SVD's
    # gaps err by 2γ₂₇‖H‖ each (Weyl); first order in all of them
    dp = (64 * gamma(10) + 16 * 90 * gamma(10) * exact) * lam**3
    dgaps = 2 * gamma(27) * b.nX * b.nY * (D2 * D3 + D3 * D4 + D2 * D4)
    relative = (dp + dgaps) / (D2 * D3 * D4)
    ok = finite & (relative < 0.1)
    assert ok.mean() > 0.8
    assert np.all(np.abs(kappa[ok] / exact[ok] - 1) <= 2 * relative[ok])
    # R̂ against the SVD rotation, each within its bound of the exact optimum
    R_svd, _ = kabsch(X[:, 1:], Y[:, 1:])
    bound = np.array([rotation_bound(k, n_terms) for k in kappa])
    assert np.all(np.linalg.norm(R - R_svd, axis=(1, 2)) <= bound + b.rotation["svd"])
    # the bound is the rounding of well-conditioned pairs, growing with κ to the cap 2√2
    assert np.median(bound[exact < 2]) < 1e-11
    assert np.all(np.diff(bound[np.argsort(kappa)]) >= 0)
    assert rotation_bound(np.inf, n_terms) == rotation_bound(1e9, n_terms) > 2 * np.sqrt(2)


def test_accuracy_bound_covers_the_computed_accuracy():
    """ĝ of eq. (2.25) and (2.26) against the accuracy at the SVD rotation."""
    from mlmlearn.oamlm._superpose import accuracy_bound, best_alignments

    X, Y = _pairs_with_gaps(5, n_pairs=150)
    n = X.shape[1]
    order = np.arange(n)[None]
    R_svd, _ = kabsch(X[:, 1:], Y[:, 1:])
    b = superposition_bounds(X[:, 1:], Y[:, 1:])
    residual = np.linalg.norm(Y - X @ R_svd.transpose(0, 2, 1), axis=2)
    for rss in (False, True):
        g_svd = np.sqrt((residual**2).sum(axis=1)) / n if rss else residual.sum(axis=1) / n
        sum_x = np.linalg.norm(X, axis=2).sum(axis=1)
        sum_y = np.linalg.norm(Y, axis=2).sum(axis=1)
        # the SVD side: its rotation error and its own evaluation's rounding
        svd_side = ((b.rotation["svd"] + np.sqrt(3) * gamma(4)) * sum_x + gamma(4) * sum_y) / n \
            + gamma(3 * n + 4) * g_svd
        for i in range(len(X)):
            _, g, _, e, _ = best_alignments(Y[i : i + 1], X[i : i + 1], order, rss=rss,
                                            return_ties=True)
            _, kappa = _qcp_with_kappa(X[i : i + 1], Y[i : i + 1])
            # the kernel's bound is accuracy_bound's (κ passed through λ̄³/p' here)
            assert e[0, 0] == pytest.approx(
                accuracy_bound(kappa[0], sum_x[i], sum_y[i], n, n - 1, g[0, 0]), rel=1e-12)
            assert abs(g[0, 0] - g_svd[i]) <= e[0, 0] + svd_side[i]


def _methyl():
    """C (centre) with its S on the axis and three H, ideal C3v (Å)."""
    theta = np.arccos(-1.0 / 3.0)
    h = [1.09 * np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi),
                          np.cos(theta)]) for phi in (0.0, 2 * np.pi / 3, 4 * np.pi / 3)]
    return np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.82], *h])


def _methane():
    """C (centre) and four H at the vertices of a regular tetrahedron (Td, Å)."""
    v = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3.0)
    return np.vstack([np.zeros(3), 1.09 * v])


SYMMETRIC = {
    # the set, its orderings, how many rotations map it onto itself, equivalent rows
    "methyl": (_methyl, [(0, 1, *(2 + np.array(p))) for p in itertools.permutations(range(3))],
               3, [2, 3, 4]),
    "methane": (_methane, [(0, *(1 + np.array(p))) for p in itertools.permutations(range(4))],
                12, [1, 2, 3, 4]),
}


def _rotation_from(quaternion):
    from scipy.spatial.transform import Rotation

    return Rotation.from_quat(quaternion / np.linalg.norm(quaternion)).as_matrix()


def _mean_of_tied(P, S, orders, rss=False):
    """The tie rule spelled out: every ordering alone, then the mean of those within 2E_b."""
    from mlmlearn.oamlm._superpose import best_alignments

    single = [best_alignments(P, S, orders[o : o + 1], rss=rss, return_ties=True)
              for o in range(len(orders))]
    R = np.array([s[0] for s in single])  # (n_orders, n, k, 3, 3)
    g = np.array([s[1] for s in single])
    bound = np.array([s[3] for s in single])
    b = np.argmin(g, axis=0)
    g_b = np.take_along_axis(g, b[None], 0)[0]
    e_b = np.take_along_axis(bound, b[None], 0)[0]
    tied = g - g_b <= 2 * e_b
    mean = np.zeros(R.shape[1:])
    for o in range(len(orders)):  # in the order of the orderings, as the kernel sums
        mean += np.where(tied[o][..., None, None], R[o], 0.0)
    count = tied.sum(axis=0)
    mean = np.where((count == 1)[..., None, None], np.take_along_axis(
        R, b[None, ..., None, None], 0)[0], mean / count[..., None, None])
    return mean, g_b, b, count


@settings(max_examples=8, deadline=None)
@given(name=st.sampled_from(sorted(SYMMETRIC)), seed=st.integers(0, 2**32 - 1),
       rss=st.booleans(), quaternion=st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(
           lambda q: np.linalg.norm(q) > 0.1))
def test_symmetric_sets_tie_and_rotate_with_the_input(name, seed, rss, quaternion):
    """Orderings related by a symmetry tie; R t̂ rotates with the input and ignores
    which equivalent atom comes first.

    A symmetric input (against any reference) and a symmetric reference (against
    any input) give as many tied orderings as the set has rotations; R is their
    mean, as the rule spelled out gives it to the last bit. Rotating the input by Q
    maps the tied orderings onto each other with R̂'_o = Q R̂_o up to both rotations'
    bounds and the input's own rounding (γ₃√3‖P‖ in H, moving the polar factor by
    ≤ 2E/(λ̄/(8κ) − E)); permuting the equivalent rows only permutes the orderings.
    """
    from mlmlearn.oamlm._superpose import best_alignments, rotation_bound

    build, orders, n_sym, equivalent = SYMMETRIC[name]
    orders = np.array(orders)
    rng = np.random.default_rng(seed)
    sym = build()
    other = sym + 0.15 * rng.normal(size=sym.shape)  # a set without symmetry
    other[0] = 0.0
    Q0 = _rotation_from(rng.normal(size=4))
    inputs = np.array([sym @ Q0.T, other])
    references = np.array([sym, other @ Q0.T])
    T = rng.normal(size=(2, 3))
    R, g, best, bound, tied = best_alignments(inputs, references, orders, rss=rss,
                                              return_ties=True)
    # ties: a symmetric input or reference; none between two sets without symmetry
    np.testing.assert_array_equal(tied, [[n_sym, n_sym], [n_sym, 1]])
    mean, g_b, b, count = _mean_of_tied(inputs, references, orders, rss)
    np.testing.assert_array_equal(count, tied)
    np.testing.assert_array_equal(R, mean)
    np.testing.assert_array_equal(g, g_b)
    np.testing.assert_array_equal(best, b)
    # the rotated input
    Q = _rotation_from(np.array(quaternion))
    moved = inputs @ Q.T
    R2, g2, _, _, tied2 = best_alignments(moved, references, orders, rss=rss, return_ties=True)
    np.testing.assert_array_equal(tied2, tied)
    r = np.einsum("nkij,kj->nki", R, T)
    r2 = np.einsum("nkij,kj->nki", R2, T)
    _, kappa = _qcp_with_kappa(np.repeat(references, 2, axis=0)[:, orders[0]],
                               np.tile(inputs, (2, 1, 1)))
    kappa = kappa.reshape(2, 2).T  # (input, reference), the first ordering's κ
    n_terms = sym.shape[0] - 1
    lam = 0.5 * ((inputs**2).sum(axis=(1, 2))[:, None] + (references**2).sum(axis=(1, 2)))
    E = gamma(3) * np.sqrt(3) * np.linalg.norm(inputs, axis=(1, 2))[:, None] * np.linalg.norm(
        references, axis=(1, 2))[None]
    data = 2 * E / (lam / (8 * kappa) - E)
    assert np.all(lam / (8 * kappa) > 2 * E)
    dR = np.vectorize(rotation_bound)(kappa, n_terms)
    limit = (2 * dR + data) * np.linalg.norm(T, axis=1)
    assert np.all(np.linalg.norm(r2 - r @ Q.T, axis=2) <= limit)
    # equivalent atoms in another order: the same set of orderings, permuted
    perm = np.arange(sym.shape[0])
    perm[equivalent] = rng.permutation(equivalent)
    R3, _, _, _, tied3 = best_alignments(inputs[:, perm], references, orders, rss=rss,
                                         return_ties=True)
    np.testing.assert_array_equal(tied3, tied)
    r3 = np.einsum("nkij,kj->nki", R3, T)
    assert np.all(np.linalg.norm(r3 - r, axis=2) <= 2 * dR * np.linalg.norm(T, axis=1))


@settings(max_examples=10, deadline=None)
@given(name=st.sampled_from(sorted(SYMMETRIC)), seed=st.integers(0, 2**32 - 1),
       size=st.floats(-7, -3))
def test_near_ties_keep_the_single_best_ordering(name, seed, size):
    """Symmetric sets whose atoms are moved by 10⁻⁷–10⁻³ Å (≫ the tie tolerance
    2E_b ≈ 10⁻¹¹ Å), input and reference alike, no longer tie: R is the best
    ordering's rotation, to the last bit, as before."""
    from mlmlearn.oamlm._superpose import best_alignments

    build, orders, _, _ = SYMMETRIC[name]
    orders = np.array(orders)
    rng = np.random.default_rng(seed)
    sym = build()

    def broken():
        out = sym + 10.0**size * rng.normal(size=sym.shape) / np.sqrt(3)
        out[0] = 0.0
        return out

    inputs = np.array([broken() @ _rotation_from(rng.normal(size=4)).T])
    reference = broken()[None]
    R, g, best, bound, tied = best_alignments(inputs, reference, orders, return_ties=True)
    gaps = np.array([best_alignments(inputs, reference, orders[o : o + 1])[1][0, 0]
                     for o in range(len(orders))]) - g[0, 0]
    gaps[best[0, 0]] = np.inf
    assert 2 * bound[0, 0] < 1e-10
    # the rule: exactly the orderings within 2E_b of the best (a perturbation of δ may
    # leave orderings as little as ~δ² apart); here, as almost always, none of them
    assert tied[0, 0] == 1 + np.sum(gaps <= 2 * bound[0, 0])
    assume(gaps.min() > 10 * bound[0, 0])
    assert tied[0, 0] == 1
    single, _, _ = best_alignments(inputs, reference, orders[best[0, 0]][None])
    np.testing.assert_array_equal(R, single)
    assert abs(np.linalg.det(R[0, 0]) - 1) < 1e-12


def test_compiled_loop_with_ties_equals_the_python_loop():
    """The tie branch too: the same IEEE-754 operations in the same order."""
    from mlmlearn.oamlm import _superpose

    build, orders, n_sym, _ = SYMMETRIC["methyl"]
    orders = np.array(orders)
    rng = np.random.default_rng(2)
    P = np.array([build() @ _rotation_from(rng.normal(size=4)).T for _ in range(3)])
    S = np.array([build(), build() + 0.1 * rng.normal(size=(5, 3))])
    S[1, 0] = 0.0
    for rss in (False, True):
        compiled = _superpose.best_alignments(P, S, orders, rss=rss, return_ties=True)
        out = (np.empty((3, 2, 3, 3)), np.empty((3, 2)), np.empty((3, 2), dtype=np.int64),
               np.empty((3, 2)), np.empty((3, 2), dtype=np.int64))
        _superpose._all_py(P, S, orders, rss, 1e-12, 50, *out)
        assert np.all(compiled[4] == n_sym)
        for a, b in zip(compiled, out, strict=True):
            np.testing.assert_array_equal(a, b)
