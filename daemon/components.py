"""Connected components of an undirected graph given as edges: what groups are, wherever they are computed from
pairs held in memory (a report re-filtered from the stored evidence, a benchmark's predicted pairs)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import TypeVar

T = TypeVar("T", bound=Hashable)


def components(edges: Iterable[tuple[T, T]]) -> list[list[T]]:
    """The components with two or more members, each in first-seen order (union-find with path halving)."""
    parent: dict[T, T] = {}

    def find(x: T) -> T:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra
    groups: dict[T, list[T]] = {}
    for x in parent:
        groups.setdefault(find(x), []).append(x)
    return [g for g in groups.values() if len(g) > 1]
