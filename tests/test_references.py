from fractions import Fraction

import numpy as np
import pytest
import sklearn
from _numerics import distance_bound, oracle_distances
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

from mlmlearn import EMLM, MLM, RandomReferences, RSMaximin, _maximin
from mlmlearn.references import _rs_maximin_plain, rs_maximin


def slow_rs_maximin(X, k):
    """The thesis' description, written plainly: nearest to the mean, then farthest.

    Also returns, per choice, the margin by which it wins (best minus runner-up):
    a faster implementation whose distances carry rounding must make the same
    choice wherever the margin exceeds twice the distances' error bound.
    """
    d_mean = np.linalg.norm(X - X.mean(axis=0), axis=1)
    chosen = [int(np.argmin(d_mean))]
    margins = [np.partition(d_mean, 1)[1] - d_mean[chosen[0]]]
    mind = np.linalg.norm(X - X[chosen[0]], axis=1)
    for _ in range(k - 1):
        nxt = int(np.argmax(mind))
        margins.append(mind[nxt] - np.partition(mind, -2)[-2])
        chosen.append(nxt)
        mind = np.minimum(mind, np.linalg.norm(X - X[nxt], axis=1))
    return np.array(chosen), mind, np.array(margins)


def _min_distance_bound(X, Q):
    """Bound on the error of min_k ‖x - q_k‖ from the kernel, plus the oracle's own."""
    D, e = oracle_distances(X, Q)
    return (distance_bound(X, Q, D) + e).max(axis=1)


@pytest.mark.parametrize("shape, k", [((300, 5), 40), ((1000, 3), 300), ((200, 50), 199)])
def test_rs_maximin_matches_slow_loop(shape, k):
    rng = np.random.default_rng(k)
    X = rng.normal(size=shape) * rng.uniform(0.1, 3.0, size=shape[1])
    expected, mind, margins = slow_rs_maximin(X, k)
    bound = _min_distance_bound(X, X[expected])
    assert np.all(margins > 4 * bound.max())  # the premise: no choice within rounding
    sel = RSMaximin(k).fit(X)
    np.testing.assert_array_equal(sel.indices_, expected)
    assert np.all(np.abs(sel.min_distances_ - mind) <= bound)


@pytest.mark.parametrize("working_memory", [1e-12, 1e-4, None])
def test_rs_maximin_does_not_depend_on_working_memory(working_memory):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, 4))
    expected, mind, margins = slow_rs_maximin(X, 60)
    bound = _min_distance_bound(X, X[expected])
    assert np.all(margins > 4 * bound.max())
    Xt = np.vstack([rng.normal(size=(30, 4)), X[expected[:3]]])
    with sklearn.config_context(working_memory=working_memory or 1024):
        sel = RSMaximin(60).fit(X)
        D = sel.transform(Xt)
        single = np.vstack([sel.transform(Xt[i : i + 1]) for i in range(len(Xt))])
    np.testing.assert_array_equal(sel.indices_, expected)
    assert np.all(np.abs(sel.min_distances_ - mind) <= bound)
    ref, e = oracle_distances(Xt, sel.references_)
    for got in (D, single):
        assert np.all(np.abs(got - ref) <= distance_bound(Xt, sel.references_, got) + e)
        assert np.all(got[np.arange(30, 33), np.arange(3)] == 0.0)  # references themselves


@pytest.mark.parametrize("working_memory", [1e-12, None])
def test_the_reported_transform_near_a_reference(working_memory):
    """RSMaximin(4).fit(X).transform(...) crashed in gen_batches(0) like EMLM.predict."""
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1e4, 0.0]])
    with sklearn.config_context(working_memory=working_memory or 1024):
        sel = RSMaximin(4).fit(X)
        D = sel.transform([[0.5, 0.5]])
    ref, e = oracle_distances(np.array([[0.5, 0.5]]), sel.references_)
    assert np.all(np.abs(D - ref) <= distance_bound([[0.5, 0.5]], sel.references_, D) + e)


def test_duplicates_are_never_references():
    X = np.repeat(np.arange(6.0).reshape(3, 2), 4, axis=0)  # 3 distinct rows, 12 samples
    with pytest.warns(UserWarning, match="only 3 distinct"):
        sel = RSMaximin(5).fit(X)
    assert sel.n_references_ == 3
    with pytest.warns(UserWarning, match="only 3 distinct"):
        rnd = RandomReferences(5, random_state=0).fit(X)
    assert len(np.unique(rnd.references_, axis=0)) == rnd.n_references_ == 3
    assert EMLM().fit(X, X[:, 0]).n_references_ == 3


def test_random_references_replace_drawn_duplicates():
    X = np.vstack([np.zeros((50, 2)), np.arange(20.0).reshape(10, 2) + 1])
    sel = RandomReferences(8, random_state=3).fit(X)
    assert sel.n_references_ == 8
    assert len(np.unique(sel.references_, axis=0)) == 8


def test_selectors_are_distance_transformers_in_pipelines():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(300, 2))
    y = np.sin(X[:, 0]) + X[:, 1] ** 2
    sel = RSMaximin(30).fit(X)
    D = sel.transform(X[:3])
    ref, e = oracle_distances(X[:3], sel.references_)
    assert np.all(np.abs(D - ref) <= distance_bound(X[:3], sel.references_, D) + e)
    assert make_pipeline(RSMaximin(60), Ridge(1e-6)).fit(X, y).score(X, y) > 0.95


def test_estimators_accept_every_reference_spec():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), rng.normal(size=60)
    assert MLM(references=10).fit(X, y).n_references_ == 10
    assert MLM(references=0.25).fit(X, y).n_references_ == 15
    assert MLM(references="all").fit(X, y).n_references_ == 60
    model = MLM(references=RandomReferences(12, random_state=0)).fit(X, y)
    np.testing.assert_array_equal(model.references_, X[model.reference_indices_])
    np.testing.assert_array_equal(model.output_references_[:, 0], y[model.reference_indices_])


def test_too_few_samples_names_the_argument():
    X = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match=r"n_references=20 exceeds n_samples=10"):
        RSMaximin(20).fit(X)
    with pytest.raises(ValueError, match=r"n_references=20 exceeds n_samples=10"):
        EMLM(references=20).fit(X, X[:, 0])


def test_selector_without_indices_is_rejected():
    from sklearn.preprocessing import StandardScaler

    X = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(TypeError, match="indices_"):
        EMLM(references=StandardScaler()).fit(X, X[:, 0])


# --- RS-maximin with pruning: identical to the plain algorithm, bit for bit -------------------


def _halving_sum(x, q):
    """The pair formula in plain Python floats (IEEE doubles), one operation at a time."""
    v = [(a - b) * (a - b) for a, b in zip(x, q, strict=True)]
    v += [0.0] * (_maximin._padded_length(len(v)) - len(v))
    while len(v) > 1:
        h = len(v) // 2
        v = [v[i] + v[i + h] for i in range(h)]
    return v[0]


@pytest.mark.parametrize("d", [1, 2, 3, 4, 5, 7, 8, 9, 31, 33, 100, 2030])
def test_pair_formula_is_one_formula(d):
    """Compiled, numpy and plain-Python sums agree bitwise, on any subset of rows, within
    the stated relative error of the exact value."""
    rng = np.random.default_rng(d)
    X = rng.normal(size=(40, d)) * 10.0 ** rng.uniform(-6, 6, size=(40, 1))
    X[5] = X[3]  # a duplicate: exactly 0
    q = X[3]
    full = _maximin.squared_distances(X, q)
    rows = np.array([39, 0, 17, 3, 5, 17])
    np.testing.assert_array_equal(_maximin.squared_distances(X, q, compiled=False), full)
    np.testing.assert_array_equal(_maximin.squared_distances(X, q, rows), full[rows])
    np.testing.assert_array_equal(_maximin.squared_distances(X, q, rows, compiled=False),
                                  full[rows])
    assert full[3] == full[5] == 0.0
    tol = (_maximin._padded_length(d).bit_length() + 3) * _maximin._U
    for i in range(0, 40, 7):
        assert full[i] == _halving_sum(X[i].tolist(), q.tolist())
        exact = sum((Fraction(a) - Fraction(b)) ** 2 for a, b in zip(X[i], q, strict=True))
        assert abs(Fraction(full[i]) - exact) <= Fraction(tol) * exact


def _adversarial_sets():
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(5.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    tiny = np.array([[i, j] for i in range(6) for j in range(6)], dtype=float)
    base = rng.normal(size=(60, 6))
    return {
        # exact ties everywhere: integer lattice, and the vertices of a regular simplex
        "lattice": grid,
        "simplex": np.vstack([np.eye(12) * 3.0, np.full((1, 12), 0.25)]),
        # every row three times, shuffled
        "duplicates": np.repeat(base, 3, axis=0)[rng.permutation(180)],
        # one tight cluster (within 1e-9) far off the mean, plus a few spread points
        "cluster": np.vstack([5.0 + 1e-9 * rng.normal(size=(120, 6)),
                              rng.normal(size=(8, 6))]),
        # a lattice at 1e-13 spacing whose mean an outlier drags away: the bounds' rounding
        # margins decide here (without them the selection differs)
        "tiny lattice": np.vstack([1.0 + 1e-13 * tiny, [[1e4, 0.0]]]),
        # far outliers
        "outliers": np.vstack([rng.normal(size=(150, 5)), 1e6 * rng.normal(size=(3, 5))]),
        # columns of very different scales
        "mixed scales": rng.normal(size=(150, 6)) * 10.0 ** np.arange(-8.0, 10.0, 3.0),
    }


_ADVERSARIAL = _adversarial_sets()


@pytest.mark.parametrize("name", list(_ADVERSARIAL))
def test_rs_maximin_identical_to_plain_on_adversarial_data(name, monkeypatch):
    X = _ADVERSARIAL[name]
    n, d = X.shape
    k = n  # runs into the early stop wherever there are duplicates
    expected, mind = _rs_maximin_plain(X, k)
    for p in sorted({0, 1, max(1, d // 2), d}):
        for compiled in (True, False):
            if not compiled:
                monkeypatch.setattr(_maximin, "_kernels", lambda: None)
            got, got_mind = rs_maximin(X, k, n_components=p)
            monkeypatch.undo()
            np.testing.assert_array_equal(got, expected, err_msg=f"p={p} compiled={compiled}")
            np.testing.assert_array_equal(got_mind, mind, err_msg=f"p={p} compiled={compiled}")
    sel = RSMaximin(min(k, 40)).fit(X)
    np.testing.assert_array_equal(sel.indices_, expected[:40])
    np.testing.assert_array_equal(sel.min_distances_, _rs_maximin_plain(X, min(k, 40))[1])


def test_skip_test_never_skips_a_closer_pair():
    """For every pair, neither skip test (the head bound, the full bound) fires with the
    running minimum just above the computed distance: the rounding margins E are what
    guarantees it on data made to break a bound without them."""
    for name in ("tiny lattice", "cluster", "lattice"):
        X = np.ascontiguousarray(_ADVERSARIAL[name])
        n, d = X.shape
        D = np.sqrt(np.array([_maximin.squared_distances(X, X[j]) for j in range(n)]))
        m = np.nextafter(D, np.inf)
        for p in range(1, d + 1):
            b = _maximin.projection_bounds(X, X.mean(axis=0), p)
            factor = _maximin._test_factor(p, d)
            for Yt, rho in ((b.head, b.head_rho), (b.Y.T, b.rho)):
                s = ((Yt[:, :, None] - Yt[:, None, :]) ** 2).sum(axis=0)
                s += (rho[:, None] - rho[None, :]) ** 2
                assert not np.any(s > (m + b.E[:, None] + b.E[None, :]) ** 2 * factor), (
                    name, p)
                if name == "tiny lattice":  # the data does probe the margins
                    assert np.any(s > m**2 * factor)


@settings(max_examples=150, deadline=None)
@given(
    X=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=30),
                 elements=st.sampled_from([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, 1e-9, 1e8])),
    k=st.integers(1, 30),
    p=st.integers(0, 8),
)
def test_rs_maximin_identical_to_plain_property(X, k, p):
    k = min(k, X.shape[0])
    p = min(p, X.shape[1])
    expected, mind = _rs_maximin_plain(X, k)
    got, got_mind = rs_maximin(X, k, n_components=p)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got_mind, mind)
    assert len(np.unique(X[got], axis=0)) == got.size  # duplicates are never chosen


def test_rs_maximin_stops_at_the_distinct_rows():
    rng = np.random.default_rng(1)
    X = np.repeat(rng.normal(size=(7, 40)), 5, axis=0)
    with pytest.warns(UserWarning, match="only 7 distinct references"):
        sel = RSMaximin(20).fit(X)
    expected, mind = _rs_maximin_plain(X, 20)
    assert expected.size == 7
    np.testing.assert_array_equal(sel.indices_, expected)
    np.testing.assert_array_equal(sel.min_distances_, np.zeros(35))
    got, _ = rs_maximin(X, 20, n_components=8)
    np.testing.assert_array_equal(got, expected)


def test_rs_maximin_rejects_a_bad_projection_dimension():
    X = np.zeros((5, 3))
    for bad in (-1, 4, 1.5):
        with pytest.raises(ValueError, match=rf"n_components={bad!r} must be an int in "
                                             r"\[0, n_features=3\]"):
            rs_maximin(X, 2, n_components=bad)


@pytest.fixture(scope="module")
def au25_hydrogen_soap():
    """Min-max scaled SOAP (the force field's settings, 2 030 features) of the hydrogen
    environments of 40 bundled Au25 frames: 2 160 real descriptor rows."""
    pytest.importorskip("dscribe")
    from sklearn.preprocessing import MinMaxScaler

    from mlmlearn.atoms import SOAP, AtomicEnvironments
    from mlmlearn.datasets import load_au25
    from mlmlearn.forcefield._forcefield import SOAP_SETTINGS

    frames = load_au25().frames[::15][:40]
    env = AtomicEnvironments(frames, species="H")
    return MinMaxScaler().fit_transform(SOAP(**SOAP_SETTINGS).fit_transform(env))


def test_rs_maximin_identical_to_plain_on_real_soap(au25_hydrogen_soap, monkeypatch):
    X = au25_hydrogen_soap
    k = 200
    expected, mind = _rs_maximin_plain(X, k)
    computed = []
    update = _maximin.pruned_update

    def counting(*args, **kwargs):
        computed.append(update(*args, **kwargs))
        return computed[-1]

    monkeypatch.setattr("mlmlearn.references.pruned_update", counting)
    sel = RSMaximin(k).fit(X)
    np.testing.assert_array_equal(sel.indices_, expected)
    np.testing.assert_array_equal(sel.min_distances_, mind)
    # the pruned path ran and skipped most rows (or the comparison above proves little)
    assert len(computed) == k - 1
    assert sum(computed) < 0.25 * X.shape[0] * (k - 1)
    expected, mind = _rs_maximin_plain(X[:600], 80)
    monkeypatch.setattr(_maximin, "_kernels", lambda: None)  # numpy only: the same result
    got, got_mind = rs_maximin(X[:600], 80)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got_mind, mind)
