"""Robust aggregation: the weighted median, which a minority of weight cannot move."""

from __future__ import annotations

from collections.abc import Sequence


def weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    """The weighted median of `values` (any order; weights > 0).

    The smallest value at which the cumulative weight passes half the total; when the
    cumulative weight lands exactly on half, the midpoint of that value and the next.
    The result always lies within ``[min(values), max(values)]`` and does not depend on the
    order of the inputs.
    """
    if not values or len(values) != len(weights):
        raise ValueError("weighted_median needs as many weights as values, at least one")
    pairs = sorted(zip(values, weights, strict=True))
    return weighted_median_sorted([v for v, _ in pairs], [w for _, w in pairs])


def weighted_median_sorted(values: Sequence[float], weights: Sequence[float]) -> float:
    """The weighted median of values already sorted ascending (hot path of consensus)."""
    half = sum(weights) / 2.0
    cumulative = 0.0
    last = len(values) - 1
    for i, weight in enumerate(weights):
        cumulative += weight
        if cumulative > half or i == last:
            return values[i]
        if cumulative == half:
            return (values[i] + values[i + 1]) / 2.0
    raise ValueError("weighted_median_sorted needs at least one value")
