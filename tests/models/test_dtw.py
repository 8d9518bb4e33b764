"""DTW kernels and pruned search against tslearn's oracle and brute force."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tslearn.metrics import cdist_dtw as ts_cdist_dtw
from tslearn.metrics import dtw as ts_dtw

from models.dtw_knn.dtw import as_series, cdist_dtw, dtw, series_lengths
from models.dtw_knn.search import knn_bruteforce, knn_search


def random_series(rng, n, T, min_len=1, equal=False):
    """NaN-padded random walks of random lengths (continuous: no distance ties)."""
    X = np.full((n, T), np.nan)
    lengths = np.full(n, T) if equal else rng.integers(min_len, T + 1, n)
    for i in range(n):
        X[i, : lengths[i]] = np.cumsum(rng.normal(size=lengths[i])) * rng.uniform(0.2, 3)
    return X, lengths


@pytest.mark.parametrize("radius", [None, 0, 1, 3, 7, 40])
def test_cdist_equals_tslearn_unequal_lengths(radius):
    rng = np.random.default_rng(11)
    A, _ = random_series(rng, 23, 30)
    B, _ = random_series(rng, 71, 30)  # 71: more than two lane blocks, last one partial
    kw = {} if radius is None else {"sakoe_chiba_radius": radius}
    ref = ts_cdist_dtw(A[:, :, None], B[:, :, None], **kw)
    got = cdist_dtw(A, B, sakoe_chiba_radius=radius)
    assert got.shape == (23, 71)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


def test_scalar_dtw_equals_tslearn_and_lane_kernel():
    rng = np.random.default_rng(3)
    A, la = random_series(rng, 8, 17)
    full = cdist_dtw(A, sakoe_chiba_radius=2)
    for i in range(8):
        for j in range(8):
            ref = ts_dtw(A[i, : la[i]], A[j, : la[j]], sakoe_chiba_radius=2)
            assert abs(dtw(A[i], A[j], sakoe_chiba_radius=2) - ref) < 1e-9
            assert abs(full[i, j] - ref) < 1e-9
    assert np.allclose(np.diag(full), 0.0)


def test_float32_close_to_float64():
    rng = np.random.default_rng(5)
    A, _ = random_series(rng, 10, 20)
    d64 = cdist_dtw(A, A)
    d32 = cdist_dtw(A, A, dtype="float32")
    assert d32.dtype == np.float32
    np.testing.assert_allclose(d32, d64, rtol=1e-4, atol=1e-4)


def test_series_lengths_and_errors():
    X = np.array([[1.0, 2.0, np.nan], [1.0, 2.0, 3.0]])
    assert series_lengths(X).tolist() == [2, 3]
    with pytest.raises(ValueError, match="row 0"):
        series_lengths(np.array([[1.0, np.nan, 3.0]]))
    with pytest.raises(ValueError, match="all NaN"):
        as_series(np.array([[np.nan, np.nan]]))
    with pytest.raises(ValueError, match="radius"):
        cdist_dtw(X, X, sakoe_chiba_radius=-3)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_ref=st.integers(1, 150),
    T=st.integers(1, 25),
    k=st.integers(1, 12),
    radius=st.sampled_from([None, 0, 1, 4]),
    equal=st.booleans(),
)
def test_pruned_search_equals_bruteforce(seed, n_ref, T, k, radius, equal):
    rng = np.random.default_rng(seed)
    Q, _ = random_series(rng, 9, T, equal=equal)
    R, _ = random_series(rng, n_ref, T, equal=equal)
    k = min(k, n_ref)
    d, i, stats = knn_search(Q, R, k, radius)
    d2, i2 = knn_bruteforce(Q, R, k, radius)
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(d, d2)
    assert stats.pairs == 9 * n_ref
    assert 0 <= stats.pairs_abandoned <= stats.pairs_in_kernel <= stats.pairs


def test_search_prunes_most_pairs_and_handles_ties():
    rng = np.random.default_rng(0)
    Q, _ = random_series(rng, 20, 32, equal=True)
    R, _ = random_series(rng, 2000, 32, equal=True)
    d, i, stats = knn_search(Q, R, 5)
    assert stats.pruned_fraction > 0.5
    # duplicated references tie exactly: both rankings must keep the lower index first
    R2 = np.concatenate([R[:50], R[:50]])
    d, i, _ = knn_search(Q, R2, 10)
    d2, i2 = knn_bruteforce(Q, R2, 10)
    np.testing.assert_array_equal(i, i2)
    assert (d[:, 0] == d[:, 1]).all() and (i[:, 1] - i[:, 0] == 50).all()


@pytest.mark.parametrize("radius", [None, 2])
def test_pruned_search_float32_equals_bruteforce(radius):
    rng = np.random.default_rng(21)
    Q, _ = random_series(rng, 15, 20)
    R, _ = random_series(rng, 400, 20)
    d, i, _ = knn_search(Q, R, 6, radius, dtype="float32")
    d2, i2 = knn_bruteforce(Q, R, 6, radius, dtype="float32")
    assert d.dtype == np.float32
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(d, d2)
