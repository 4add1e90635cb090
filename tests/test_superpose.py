"""The OAMLM alignment core: QCP rotations against the SVD (Kabsch) oracle."""

import numpy as np
import pytest
from _numerics import gamma, superposition_bounds
from hypothesis import given, settings
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
    compiled = _superpose.best_alignments(P, S, orders)
    R, g, best = np.empty((4, 3, 3, 3)), np.empty((4, 3)), np.empty((4, 3), dtype=np.int64)
    _superpose._all_py(P, S, orders, False, 1e-12, 50, R, g, best)  # pure Python throughout
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
    # compiling rebinds nothing in the module
    assert _superpose._superpose is _superpose._superpose_py


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
