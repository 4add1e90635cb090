import numpy as np
import sklearn
from scipy.spatial.distance import cdist

from mlmlearn._distances import euclidean_distances


def test_matches_scipy_cdist_and_is_chunked():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(500, 30)), rng.normal(size=(70, 30))
    expected = cdist(X, Y)
    with sklearn.config_context(working_memory=0.01):  # forces many row blocks
        D = euclidean_distances(X, Y)
    np.testing.assert_allclose(D, expected, rtol=1e-12, atol=1e-12)


def test_identical_points_are_exactly_zero_and_near_ones_accurate():
    rng = np.random.default_rng(1)
    X = rng.normal(loc=1e3, size=(50, 8))  # large norms: the expansion cancels badly
    Y = np.vstack([X[:10], X[10:20] + 1e-7])
    D = euclidean_distances(X, Y)
    assert np.all(D[np.arange(10), np.arange(10)] == 0.0)
    near = D[np.arange(10, 20), np.arange(10, 20)]
    np.testing.assert_allclose(near, 1e-7 * np.sqrt(8), rtol=1e-6)
