"""Hard constraints decide who may be asked; the score ranks them with a breakdown."""

from hypothesis import given
from hypothesis import strategies as st

from leanon_matching.domain.eligibility import Rejection, check, explain
from leanon_matching.domain.model import Weights
from leanon_matching.domain.scoring import score
from tests.unit.factories import helper, request


def test_an_able_nearby_available_helper_is_eligible() -> None:
    result = check(helper(), request())
    assert result.rejection is None
    assert result.distance_km is not None and 0 < result.distance_km < 3


def test_each_hard_constraint_rejects_with_its_reason() -> None:
    req = request(languages=frozenset({"es"}))
    assert check(helper(org="other"), request()).rejection is Rejection.OTHER_ORG
    assert check(helper(), request(), asked=frozenset({"h1"})).rejection is Rejection.ALREADY_ASKED
    assert check(helper(skills={"first_aid": 1}), request()).rejection is Rejection.SKILL
    assert check(helper(), req).rejection is Rejection.LANGUAGE
    assert check(helper(lat=48.1, lon=11.6), request()).rejection is Rejection.DISTANCE
    assert check(helper(weekly=()), request()).rejection is Rejection.AVAILABILITY


def test_remote_requests_ignore_distance() -> None:
    assert check(helper(lat=None, lon=None), request(lat=None, lon=None)).rejection is None


def test_partial_coverage_passes_a_lower_threshold_only() -> None:
    from tests.unit.factories import slot

    half = helper(weekly=(slot(0, "10:00", "10:30"),))
    assert check(half, request()).rejection is Rejection.AVAILABILITY
    assert check(half, request(), coverage_threshold=0.5).rejection is None


def test_explain_names_the_constraints_that_eliminated_helpers() -> None:
    req = request()
    checks = [
        check(helper(skills={"first_aid": 1}), req),
        check(helper(weekly=()), req),
        check(helper(id="h2", weekly=()), req),
    ]
    reason = explain(req, checks, examined=3)
    assert "of 3 candidates" in reason
    assert "1 lack skill first_aid at level 2+" in reason
    assert "2 are not available" in reason


@given(low=st.integers(2, 4), extra=st.integers(1, 3))
def test_score_rises_with_skill_level(low: int, extra: int) -> None:
    high = min(5, low + extra)
    req = request()
    a = score(
        helper(skills={"first_aid": low}), req, distance_km=1, coverage=1, load=0, weights=Weights()
    )
    b = score(
        helper(skills={"first_aid": high}),
        req,
        distance_km=1,
        coverage=1,
        load=0,
        weights=Weights(),
    )
    assert b.score >= a.score
    assert b.breakdown["skill"] > a.breakdown["skill"] or high == low


@given(near=st.floats(0, 50), further=st.floats(0.5, 50))
def test_score_falls_with_distance(near: float, further: float) -> None:
    h, req = helper(), request()
    a = score(h, req, distance_km=near, coverage=1, load=0, weights=Weights())
    b = score(h, req, distance_km=near + further, coverage=1, load=0, weights=Weights())
    assert b.score <= a.score
    assert b.breakdown["distance"] < a.breakdown["distance"]


@given(load=st.integers(0, 5))
def test_scores_stay_in_unit_interval_and_busier_helpers_score_lower(load: int) -> None:
    h = helper(capacity=5)
    s = score(h, request(), distance_km=3, coverage=1, load=load, weights=Weights())
    idle = score(h, request(), distance_km=3, coverage=1, load=0, weights=Weights())
    assert 0.0 <= s.score <= 1.0
    assert set(s.breakdown) == {"skill", "availability", "distance", "language", "fairness"}
    assert s.score <= idle.score


def test_language_scores_full_when_the_request_names_none_or_one_is_shared() -> None:
    h = helper(languages=frozenset({"de", "en"}))

    def language(languages: set[str]) -> float:
        req = request(languages=frozenset(languages))
        return score(h, req, distance_km=1, coverage=1, load=0, weights=Weights()).breakdown[
            "language"
        ]

    assert language(set()) == 1.0
    assert language({"en", "fr"}) == 1.0
    assert language({"fr"}) == 0.0
