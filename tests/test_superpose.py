"""The OAMLM alignment core: QCP rotations against the SVD (Kabsch) oracle."""

import numpy as np
import pytest
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
    np.testing.assert_allclose(rmsd, rmsd_svd, atol=1e-9)
    np.testing.assert_allclose(_residual(X, Y, R), rmsd, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_allclose(
        R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12
    )
    assert np.all(np.linalg.det(R_svd) > 0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_points=st.integers(3, 12))
def test_qcp_recovers_an_exact_rotation(seed, n_points):
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(1, n_points, 3))
    R0 = Rotation.random(random_state=seed).as_matrix()
    R, rmsd = qcp(X, X @ R0.T)
    np.testing.assert_allclose(R[0], R0, atol=1e-9)
    assert rmsd[0] < 1e-9


def test_reflected_sets_get_a_rotation_not_a_mirror():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 5, 3))
    Y = X * np.array([1.0, 1.0, -1.0])  # mirror images
    R, rmsd = qcp(X, Y)
    _, rmsd_svd = kabsch(X, Y)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_allclose(rmsd, rmsd_svd, atol=1e-9)
    assert np.all(rmsd > 1e-3)


def test_degenerate_sets():
    X = np.zeros((1, 3, 3))
    R, rmsd = qcp(X, X)
    np.testing.assert_allclose(R[0], np.eye(3))
    assert rmsd[0] == 0.0
    line = np.array([[[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]])
    R, rmsd = qcp(line, line[..., [1, 0, 2]])
    assert rmsd[0] < 1e-9


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
    for i in range(len(P)):
        for j in range(len(S)):
            scores = []
            for o in orders:
                R_o, _ = kabsch(S[j, o][None], P[i][None])
                residual = P[i] - S[j, o] @ R_o[0].T
                if rss:
                    scores.append(np.sqrt((residual**2).sum()) / (m + 1))  # eq. (2.26)
                else:
                    scores.append(np.linalg.norm(residual, axis=1).sum() / (m + 1))  # eq. (2.25)
            assert g[i, j] == pytest.approx(min(scores), abs=1e-12)
            assert best[i, j] == int(np.argmin(scores))
            residual = P[i] - S[j, orders[best[i, j]]] @ R[i, j].T
            assert np.linalg.norm(residual) == pytest.approx(
                np.linalg.norm(
                    P[i]
                    - S[j, orders[best[i, j]]]
                    @ kabsch(S[j, orders[best[i, j]]][None], P[i][None])[0][0].T
                ),
                abs=1e-12,
            )


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
    np.testing.assert_allclose(compiled[0], R, atol=1e-12)
    np.testing.assert_allclose(compiled[1], g, atol=1e-12)
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
