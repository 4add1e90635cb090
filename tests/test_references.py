import numpy as np
import pytest
import sklearn
from _numerics import distance_bound, oracle_distances
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

from mlmlearn import EMLM, MLM, RandomReferences, RSMaximin


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
