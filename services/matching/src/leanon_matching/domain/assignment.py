"""Joint assignment of a batch of requests to helpers: the most total score under capacity.

Requests of one region that arrive together are assigned at once, most urgent first, as a
rectangular assignment problem (each request repeated once per offer it wants, each helper
once per slot it has left), solved exactly with scipy's linear_sum_assignment. Greedy
(best remaining helper for each request in turn) is the fallback when a batch is too large to
solve quickly, and the baseline the benchmark reports beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from leanon_matching.domain.model import Request, Scored

URGENCY_ORDER = ("critical", "high", "normal", "low")
TOP_K = 16  # candidates per request that enter the joint problem
MAX_CELLS = 250_000  # rows x columns above which the batch is assigned greedily
NO_EDGE = -1.0


@dataclass(slots=True)
class Need:
    """One request's part in a batch: how many offers it wants, and its ranked candidates."""

    request: Request
    wanted: int
    ranked: list[Scored]


def assign(
    needs: Sequence[Need], remaining: dict[str, int], *, joint: bool = True
) -> list[list[Scored]]:
    """Choose helpers for every need, never beyond a helper's remaining capacity and never
    the same helper twice for one request. Returns the chosen candidates per need, best first.
    """
    left = dict(remaining)
    chosen: list[list[Scored]] = [[] for _ in needs]
    for urgency in URGENCY_ORDER:
        tier = [i for i, n in enumerate(needs) if n.request.urgency == urgency and n.wanted > 0]
        if not tier:
            continue
        rows = sum(needs[i].wanted for i in tier)
        columns = len({s.helper.id for i in tier for s in needs[i].ranked[:TOP_K]})
        greedy_left, greedy_chosen = dict(left), [list(c) for c in chosen]
        _greedy(needs, tier, greedy_left, greedy_chosen)
        if joint and rows * columns * min(rows, 4) <= MAX_CELLS:
            joint_left, joint_chosen = dict(left), [list(c) for c in chosen]
            _joint(needs, tier, joint_left, joint_chosen)
            _greedy(needs, tier, joint_left, joint_chosen)  # fills what the joint pass left open
            # The joint problem cannot forbid two copies of one helper on one request; when
            # that costs it the lead, greedy's answer stands.
            if total_score(joint_chosen) > total_score(greedy_chosen) + 1e-12:
                greedy_left, greedy_chosen = joint_left, joint_chosen
        left, chosen = greedy_left, greedy_chosen
    return chosen


def _joint(
    needs: Sequence[Need], tier: list[int], left: dict[str, int], chosen: list[list[Scored]]
) -> None:
    row_need: list[int] = [i for i in tier for _ in range(needs[i].wanted)]
    col_helper: list[str] = []
    for helper_id in sorted({s.helper.id for i in tier for s in needs[i].ranked[:TOP_K]}):
        col_helper += [helper_id] * min(left.get(helper_id, 0), len(row_need))
    if not row_need or not col_helper:
        return
    column_of: dict[str, list[int]] = {}
    for j, helper_id in enumerate(col_helper):
        column_of.setdefault(helper_id, []).append(j)
    # One "leave this open" column per row at weight 0: a request may stay unassigned in the
    # joint pass rather than push another onto a worse helper (greedy refills it afterwards).
    weights = np.full((len(row_need), len(col_helper) + len(row_need)), NO_EDGE)
    weights[:, len(col_helper) :] = 0.0
    by_need: dict[int, dict[str, Scored]] = {}
    for r, i in enumerate(row_need):
        options = by_need.setdefault(i, {s.helper.id: s for s in needs[i].ranked[:TOP_K]})
        for helper_id, scored in options.items():
            for j in column_of.get(helper_id, ()):
                weights[r, j] = scored.score
    rows, cols = linear_sum_assignment(weights, maximize=True)
    for r, j in zip(rows, cols, strict=True):
        if j >= len(col_helper) or weights[r, j] <= NO_EDGE:
            continue
        i, helper_id = row_need[r], col_helper[j]
        if any(s.helper.id == helper_id for s in chosen[i]) or left.get(helper_id, 0) <= 0:
            continue  # two copies of one helper landed on one request: greedy refills
        chosen[i].append(by_need[i][helper_id])
        left[helper_id] -= 1


def _greedy(
    needs: Sequence[Need], tier: list[int], left: dict[str, int], chosen: list[list[Scored]]
) -> None:
    for i in tier:
        need = needs[i]
        taken = {s.helper.id for s in chosen[i]}
        for scored in need.ranked:
            if len(chosen[i]) >= need.wanted:
                break
            helper_id = scored.helper.id
            if helper_id in taken or left.get(helper_id, 0) <= 0:
                continue
            chosen[i].append(scored)
            taken.add(helper_id)
            left[helper_id] -= 1
        chosen[i].sort(key=lambda s: -s.score)


def total_score(chosen: list[list[Scored]]) -> float:
    return sum(s.score for picks in chosen for s in picks)


def gini(values: Sequence[float]) -> float:
    """Inequality of load across helpers: 0 when even, towards 1 when one takes everything."""
    xs = sorted(values)
    n, total = len(xs), sum(xs)
    if n == 0 or total == 0:
        return 0.0
    weighted = sum((i + 1) * x for i, x in enumerate(xs))
    return (2 * weighted) / (n * total) - (n + 1) / n
