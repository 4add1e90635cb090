import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

from mlmlearn import EMLM, MLM, RandomReferences, RSMaximin


def slow_rs_maximin(X, k):
    """The thesis' description, written plainly: nearest to the mean, then farthest."""
    chosen = [int(np.argmin(np.linalg.norm(X - X.mean(axis=0), axis=1)))]
    mind = np.linalg.norm(X - X[chosen[0]], axis=1)
    for _ in range(k - 1):
        nxt = int(np.argmax(mind))
        chosen.append(nxt)
        mind = np.minimum(mind, np.linalg.norm(X - X[nxt], axis=1))
    return np.array(chosen), mind


@pytest.mark.parametrize("shape, k", [((300, 5), 40), ((1000, 3), 300), ((200, 50), 199)])
def test_rs_maximin_matches_slow_loop(shape, k):
    rng = np.random.default_rng(k)
    X = rng.normal(size=shape) * rng.uniform(0.1, 3.0, size=shape[1])
    expected, mind = slow_rs_maximin(X, k)
    sel = RSMaximin(k).fit(X)
    np.testing.assert_array_equal(sel.indices_, expected)
    np.testing.assert_allclose(sel.min_distances_, mind, rtol=1e-9, atol=1e-12)


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
    np.testing.assert_allclose(sel.transform(X[:3]),
                               np.linalg.norm(X[:3, None] - sel.references_[None], axis=2))
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
