"""Joint assignment beats greedy on total score and never exceeds a helper's capacity."""

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from leanon_matching.domain.assignment import Need, assign, gini, total_score
from leanon_matching.domain.model import Scored
from tests.unit.factories import helper, request


def scored(helper_id: str, value: float) -> Scored:
    return Scored(helper=helper(id=helper_id), score=value)


def test_joint_assignment_finds_the_better_total_where_greedy_does_not() -> None:
    # Greedy gives A to r1 (0.9) and leaves r2 with B (0.1): 1.0.  Jointly: r1-B + r2-A = 1.6.
    needs = [
        Need(request(id="r1"), 1, [scored("A", 0.9), scored("B", 0.8)]),
        Need(request(id="r2"), 1, [scored("A", 0.8), scored("B", 0.1)]),
    ]
    greedy = assign(needs, {"A": 1, "B": 1}, joint=False)
    joint = assign(needs, {"A": 1, "B": 1})
    assert round(total_score(greedy), 6) == 1.0
    assert round(total_score(joint), 6) == 1.6


def test_more_urgent_requests_choose_first() -> None:
    needs = [
        Need(request(id="low", urgency="low"), 1, [scored("A", 0.9)]),
        Need(request(id="crit", urgency="critical"), 1, [scored("A", 0.5)]),
    ]
    chosen = assign(needs, {"A": 1})
    assert chosen[0] == [] and [s.helper.id for s in chosen[1]] == ["A"]


def test_one_request_gets_distinct_helpers() -> None:
    needs = [Need(request(id="r", helpers_needed=2), 2, [scored("A", 0.9), scored("B", 0.5)])]
    chosen = assign(needs, {"A": 2, "B": 1})
    assert sorted(s.helper.id for s in chosen[0]) == ["A", "B"]


@settings(max_examples=100, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.integers(1, 3), st.lists(st.tuples(st.integers(0, 7), st.floats(0, 1)), max_size=8)
        ),
        min_size=1,
        max_size=8,
    ),
    caps=st.lists(st.integers(0, 3), min_size=8, max_size=8),
    joint=st.booleans(),
)
def test_capacity_and_distinctness_hold_for_any_batch(
    data: list[tuple[int, list[tuple[int, float]]]], caps: list[int], joint: bool
) -> None:
    needs = []
    for n, (wanted, options) in enumerate(data):
        best: dict[str, float] = {}
        for h, value in options:
            best[f"h{h}"] = max(value, best.get(f"h{h}", 0))
        ranked = sorted((scored(h, v) for h, v in best.items()), key=lambda s: -s.score)
        needs.append(Need(request(id=f"r{n}"), wanted, ranked))
    remaining = {f"h{i}": c for i, c in enumerate(caps)}
    chosen = assign(needs, remaining, joint=joint)
    load = Counter(s.helper.id for picks in chosen for s in picks)
    assert all(load[h] <= remaining[h] for h in load)
    for need, picks in zip(needs, chosen, strict=True):
        ids = [s.helper.id for s in picks]
        assert len(ids) == len(set(ids)) and len(ids) <= need.wanted
        assert set(ids) <= {s.helper.id for s in need.ranked}
    if joint:
        assert total_score(chosen) >= total_score(assign(needs, remaining, joint=False)) - 1e-9


def test_gini_is_zero_when_even_and_grows_with_concentration() -> None:
    assert gini([2, 2, 2, 2]) == 0
    assert gini([0, 0, 0, 8]) > gini([1, 1, 2, 4]) > 0
