import numpy as np
import pytest
import sklearn
from _numerics import distance_bound, oracle_distances
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlmlearn._distances import euclidean_distances, row_chunks

# from one row per block (a budget below one row) to scikit-learn's default (None)
WORKING_MEMORY = [1e-12, 1e-4, 0.01, None]


def _check_against_oracle(X, Y, D):
    """The kernel's derived error bound against the brute-force oracle, and exact zeros."""
    assert D.shape == (len(X), len(Y))
    assert np.all(np.isfinite(D)) and np.all(D >= 0)
    ref, ref_err = oracle_distances(X, Y)
    assert np.all(np.abs(D - ref) <= distance_bound(X, Y, D) + ref_err)
    # identical rows are exactly 0 apart
    same = np.all(X[:, None, :] == Y[None, :, :], axis=2)
    assert np.all(D[same] == 0.0)
    # near-coincident pairs, which the expansion would lose, are accurate relative to
    # their own size: d² ≤ 0.5e-8 (|x|² + |q|²) is below the recompute threshold even
    # after the expansion's error, so those entries come from the differences
    scale = np.einsum("ij,ij->i", X, X)[:, None] + np.einsum("ij,ij->i", Y, Y)[None, :]
    near = ref**2 <= 0.5e-8 * scale
    recomputed_error = (X.shape[1] + 4) * np.finfo(float).eps * ref
    assert np.all(np.abs(D - ref)[near] <= (recomputed_error + ref_err)[near])


@st.composite
def point_sets(draw):
    """X and Y with offsets up to 1e12, scales 1e-30…1e30, exact and near duplicates."""
    p = draw(st.integers(1, 6))
    n = draw(st.integers(0, 12))
    m = draw(st.integers(0, 8))
    # a grid of 2e6 + 1 values in [-1, 1]: no underflow of squares even at scale 1e-30,
    # which the rounding model behind the bound excludes
    unit = st.integers(-10**6, 10**6).map(lambda i: i / 10**6)
    X = draw(hnp.arrays(np.float64, (n, p), elements=unit))
    Y = draw(hnp.arrays(np.float64, (m, p), elements=unit))
    offset = draw(st.sampled_from([0.0, 1.0, 1e4, 1e8, -1e12]))
    scale = draw(st.sampled_from([1e-30, 1e-3, 1.0, 1e6, 1e30]))
    X, Y = (X + offset) * scale, (Y + offset) * scale
    if n and m:
        # copy some rows of X into Y, exactly or moved by a relative 1e-15…1e-3
        for k in draw(st.lists(st.integers(0, m - 1), max_size=m, unique=True)):
            i = draw(st.integers(0, n - 1))
            rel = draw(st.sampled_from([0.0, 1e-15, 1e-12, 1e-9, 1e-6, 1e-3]))
            direction = draw(hnp.arrays(np.float64, p, elements=unit))
            Y[k] = X[i] + rel * np.abs(X[i]).max() * direction
    return X, Y


@settings(max_examples=300, deadline=None)
@given(data=point_sets(), working_memory=st.sampled_from(WORKING_MEMORY))
def test_distances_match_the_brute_force_oracle_within_the_derived_bound(data, working_memory):
    X, Y = data
    with sklearn.config_context(working_memory=working_memory or 1024):
        D = euclidean_distances(X, Y)
    _check_against_oracle(X, Y, D)


@settings(max_examples=100, deadline=None)
@given(data=point_sets())
def test_working_memory_changes_distances_by_rounding_only(data):
    """Different row blocks agree within the sum of their bounds (BLAS rounds
    different block shapes differently, so bitwise equality is not promised)."""
    X, Y = data
    results = []
    for wm in WORKING_MEMORY:
        with sklearn.config_context(working_memory=wm or 1024):
            results.append(euclidean_distances(X, Y))
    for D in results[1:]:
        assert np.all(np.abs(D - results[0])
                      <= distance_bound(X, Y, D) + distance_bound(X, Y, results[0]))
        assert np.array_equal(D == 0, results[0] == 0)


@pytest.mark.parametrize("working_memory", WORKING_MEMORY)
@pytest.mark.parametrize("n, m", [(0, 0), (0, 3), (3, 0), (1, 1), (1, 5), (5, 1)])
def test_empty_and_single_row_inputs(n, m, working_memory):
    rng = np.random.default_rng(n * 10 + m)
    X, Y = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
    with sklearn.config_context(working_memory=working_memory or 1024):
        D = euclidean_distances(X, Y)
    _check_against_oracle(X, Y, D)


def test_the_reported_near_duplicate_recheck_with_no_pairs_left():
    """A row passes the loose per-row test (scaled by the largest reference norm)
    but no pair passes its own: the recheck used to hand 0 pairs to gen_batches."""
    Q = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1e4, 0.0]])
    X = np.array([[0.5, 0.5]])
    D = euclidean_distances(X, Q)
    _check_against_oracle(X, Q, D)


@pytest.mark.parametrize("n_rows", [0, 1, 2, 7, 100])
@pytest.mark.parametrize("row_bytes", [0, 1, 8, 2**20, 2**40])
@pytest.mark.parametrize("working_memory", [1e-12, 1e-3, 1.0, 1024.0, float("inf")])
def test_row_chunks_cover_every_row_once_in_order(n_rows, row_bytes, working_memory):
    chunks = list(row_chunks(n_rows, row_bytes, working_memory))
    covered = np.concatenate([np.arange(n_rows)[c] for c in chunks]) if chunks else []
    np.testing.assert_array_equal(covered, np.arange(n_rows))
    assert all(c.stop > c.start for c in chunks)
    budget_rows = max(1, int(working_memory * 2**20 // max(row_bytes, 1))) if np.isfinite(
        working_memory) else n_rows
    assert all(c.stop - c.start <= max(budget_rows, 1) for c in chunks)


def test_row_chunks_reject_negative_counts():
    with pytest.raises(ValueError, match="n_rows=-1"):
        row_chunks(-1, 8)
