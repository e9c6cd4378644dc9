"""The configurations no other beats on both memory and latency."""

from __future__ import annotations


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated: no other point is <= on both and < on one.

    Ties (equal on both) dominate neither each other: all of them are kept.
    """
    front = []
    for i, (m, t) in enumerate(points):
        dominated = any(
            m2 <= m and t2 <= t and (m2 < m or t2 < t) for j, (m2, t2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front
