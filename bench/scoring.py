"""Pairwise precision/recall of a grouping against a truth.json (the format of ../shared/bench-data/truth.json).

The same arithmetic as that set's score.py, importable so sweeps can score hundreds of groupings in one run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path


@dataclass
class Score:
    precision: float
    recall: float
    f1: float
    predicted_pairs: int
    true_pairs: int
    hard_negatives_wrong: int
    bad_in_groups: int
    per_transform: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (with original, total)


def _pairs(groups: Iterable[Iterable[str]]) -> set[frozenset[str]]:
    return {frozenset(p) for g in groups for p in combinations(sorted(set(g)), 2)}


def relative(groups: Iterable[Iterable[str]], root: Path) -> list[list[str]]:
    return [[os.path.relpath(p, root) if os.path.isabs(p) else p for p in g] for g in groups]


def score(truth: dict, groups: list[list[str]], exclude: frozenset[str] = frozenset()) -> Score:
    """groups: lists of paths relative to the truth's root. `exclude` drops transforms from both sides."""
    known = set(truth["transform"])
    drop = {p for p, t in truth["transform"].items() if t in exclude}
    groups = [[p for p in g if p in known and p not in drop] for g in groups]
    true_groups = [[p for p in g if p not in drop] for g in truth["groups"]]
    pred, true = _pairs(groups), _pairs(true_groups)
    tp = len(pred & true)
    p = tp / len(pred) if pred else 1.0
    r = tp / len(true) if true else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    hard = sum(frozenset((a, b)) in pred for a, b, *_ in truth.get("hard_negatives", []))
    grouped = {x for g in groups if len(g) > 1 for x in g}
    bad = len(grouped & set(truth.get("bad", [])))
    per: dict[str, tuple[int, int]] = {}
    named = set(truth.get("originals", {}).values())
    firsts = [next((m for m in g if m in named), g[0] if g else None) for g in truth["groups"]]
    original_of = {m: o for g, o in zip(true_groups, firsts, strict=True) for m in g}
    originals = set(firsts)
    for path, t in truth["transform"].items():
        if path in drop or path in originals or path not in original_of:
            continue
        hit, total = per.get(t, (0, 0))
        per[t] = (hit + (frozenset((path, original_of[path])) in pred), total + 1)
    return Score(p, r, f1, len(pred), len(true), hard, bad, per)
