"""Fixed-bucket histograms of latency and time to first token, as usage rollups store them.

A histogram is a list of counts, one per bucket: bucket ``i`` counts values in
``(EDGES_MS[i-1], EDGES_MS[i]]`` (the first from 0), the last one everything above the
largest edge. Fixed edges make histograms of different hours, keys and models add up
bucket by bucket, so percentiles over any slice come from the rollups alone.

The edges are part of the stored data: changing them means rebuilding the rollups.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

# Milliseconds. Dense where LLM latencies live (0.1-30 s), coarse beyond.
EDGES_MS: tuple[float, ...] = (
    5,
    10,
    25,
    50,
    75,
    100,
    150,
    200,
    300,
    400,
    500,
    750,
    1_000,
    1_500,
    2_000,
    3_000,
    4_000,
    5_000,
    7_500,
    10_000,
    15_000,
    20_000,
    30_000,
    60_000,
    120_000,
    300_000,
)
LATENCY_EDGES_MS = EDGES_MS
TTFT_EDGES_MS = EDGES_MS
BUCKETS = len(EDGES_MS) + 1


def histogram_empty() -> list[int]:
    return [0] * BUCKETS


def bucket_index(value_ms: float, edges: Sequence[float] = EDGES_MS) -> int:
    return bisect_left(edges, max(0.0, value_ms))


def histogram_observe(histogram: list[int], value_ms: float) -> list[int]:
    """Count one value (in place; an empty list grows to full length first)."""
    if len(histogram) < BUCKETS:
        histogram.extend([0] * (BUCKETS - len(histogram)))
    histogram[bucket_index(value_ms)] += 1
    return histogram


def histogram_merge(*histograms: Iterable[int] | None) -> list[int]:
    """Bucket-wise sum; empty or missing histograms count as all zeros."""
    merged = histogram_empty()
    for histogram in histograms:
        for index, count in enumerate(histogram or ()):
            if index < BUCKETS:
                merged[index] += int(count)
    return merged


def histogram_count(histogram: Iterable[int] | None) -> int:
    return sum(int(c) for c in histogram or ())


def percentile(
    histogram: Sequence[int] | None, q: float, edges: Sequence[float] = EDGES_MS
) -> float | None:
    """The ``q``-quantile (0..1) estimated from bucket counts; ``None`` without data.

    Linear interpolation inside the bucket that holds the rank, as Prometheus'
    ``histogram_quantile`` does; values past the last edge report that edge (a floor).
    """
    if not 0 <= q <= 1:
        raise ValueError("q must be between 0 and 1")
    counts = list(histogram or ())
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count == 0:
            continue
        if seen + count >= rank:
            if index >= len(edges):
                return float(edges[-1])
            lower = float(edges[index - 1]) if index > 0 else 0.0
            upper = float(edges[index])
            return lower + (upper - lower) * max(0.0, rank - seen) / count
        seen += count
    return float(edges[-1])
