"""Fixed-bucket histograms and the percentiles read back from them."""

from __future__ import annotations

import random

import pytest

from apps.billing.histograms import (
    BUCKETS,
    EDGES_MS,
    bucket_index,
    histogram_count,
    histogram_empty,
    histogram_merge,
    histogram_observe,
    percentile,
)


def test_bucket_edges_are_upper_inclusive():
    assert list(EDGES_MS) == sorted(EDGES_MS)
    assert bucket_index(0) == 0
    assert bucket_index(5) == 0  # (0, 5]
    assert bucket_index(5.01) == 1
    assert bucket_index(1000) == EDGES_MS.index(1000)
    assert bucket_index(10**9) == BUCKETS - 1  # overflow bucket
    assert bucket_index(-3) == 0


def test_observe_grows_an_empty_list_and_merge_adds_bucketwise():
    a = histogram_observe([], 7)
    assert len(a) == BUCKETS and a[1] == 1 and histogram_count(a) == 1
    b = histogram_observe(histogram_observe(histogram_empty(), 7), 400)
    merged = histogram_merge(a, b, None, [])
    assert merged[1] == 2 and merged[bucket_index(400)] == 1
    assert histogram_count(merged) == 3


def test_percentile_of_nothing_is_none_and_q_is_checked():
    assert percentile([], 0.5) is None
    assert percentile(histogram_empty(), 0.95) is None
    with pytest.raises(ValueError):
        percentile([1], 1.5)


def test_percentile_interpolates_inside_the_bucket():
    histogram = histogram_empty()
    # 100 values in (100, 150]: the median sits half way through that bucket.
    histogram[bucket_index(120)] = 100
    assert percentile(histogram, 0.5) == pytest.approx(125.0)
    assert percentile(histogram, 1.0) == pytest.approx(150.0)
    assert percentile(histogram, 0.0) == pytest.approx(100.0)


def test_percentile_past_the_last_edge_reports_that_edge():
    histogram = histogram_observe([], 10**7)
    assert percentile(histogram, 0.5) == EDGES_MS[-1]


def test_percentiles_track_the_true_ones_within_a_bucket():
    rng = random.Random(7)
    values = [rng.lognormvariate(6.5, 0.8) for _ in range(20_000)]  # ~665 ms median
    histogram: list[int] = []
    for value in values:
        histogram_observe(histogram, value)
    ordered = sorted(values)
    for q in (0.5, 0.95, 0.99):
        true = ordered[int(q * len(ordered)) - 1]
        index = bucket_index(true)
        lower = EDGES_MS[index - 1] if index else 0
        upper = EDGES_MS[index]
        estimate = percentile(histogram, q)
        assert lower <= estimate <= upper, (q, true, estimate)
        assert estimate == pytest.approx(true, rel=0.15)


def test_merging_then_reading_equals_reading_everything_at_once():
    rng = random.Random(3)
    parts = [[rng.uniform(1, 5000) for _ in range(500)] for _ in range(4)]
    together: list[int] = []
    separate = []
    for part in parts:
        histogram: list[int] = []
        for value in part:
            histogram_observe(histogram, value)
            histogram_observe(together, value)
        separate.append(histogram)
    assert histogram_merge(*separate) == together
    assert percentile(histogram_merge(*separate), 0.95) == percentile(together, 0.95)
