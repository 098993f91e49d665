"""The index's candidate search rules out only helpers that check() rules out, for the same
reason, on a real Redis: what it hands back plus what it tallied is what Python would decide."""

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, time, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from leanon_matching.domain.availability import time_zone
from leanon_matching.domain.eligibility import Rejection, check
from leanon_matching.domain.model import Helper, Interval
from leanon_matching.index import HelperIndex
from tests.conftest import Infra
from tests.unit.factories import MONDAY, helper, request, slot, weekly_slots


def reasons(checks: list) -> Counter[tuple[str, str]]:  # type: ignore[type-arg]
    return Counter((c.rejection.value, c.detail) for c in checks)


async def test_the_search_rules_out_helpers_and_says_why(redis: Redis, prefix: str) -> None:
    index = HelperIndex(redis, prefix)
    berlin = {"timezone": "Europe/Berlin"}
    await index.upsert(helper(id="ok", skills={"first_aid": 3, "driving": 2}, **berlin))
    await index.upsert(helper(id="no-driving", skills={"first_aid": 3, "driving": 1}, **berlin))
    await index.upsert(
        helper(id="no-german", skills={"first_aid": 3, "driving": 2}, languages=frozenset({"fr"}))
    )
    # ~10.5 km away with a 10 km radius: within the search's rough cut, not within reach.
    await index.upsert(
        helper(id="too-far", skills={"first_aid": 3, "driving": 2}, lat=52.6045, radius_km=10)
    )
    off_duty = helper(
        id="off-duty",
        skills={"first_aid": 3, "driving": 2},
        weekly=(slot(2, "09:00", "17:00"),),  # Wednesdays; the request is on a Monday
        **berlin,
    )
    await index.upsert(off_duty)
    req = request(skills={"first_aid": 2, "driving": 2}, languages=frozenset({"en", "de"}))

    first = await index.candidates(req)
    # Europe/Berlin was not known yet: availability there is left to the caller.
    assert {c.helper.id for c in first} == {"ok", "off-duty"}
    assert check(next(c.helper for c in first if c.helper.id == "off-duty"), req).rejection == (
        Rejection.AVAILABILITY
    )
    second = await index.candidates(req)
    assert [c.helper.id for c in second] == ["ok"]
    assert second.examined == 5
    assert reasons(second.ruled_out) == Counter(
        {("skill", "driving"): 1, ("language", ""): 1, ("distance", ""): 1, ("availability", ""): 1}
    )


async def test_the_search_weighs_partial_availability_against_the_threshold(
    redis: Redis, prefix: str
) -> None:
    index = HelperIndex(redis, prefix)
    berlin = {"timezone": "Europe/Berlin"}
    await index.upsert(helper(id="all-day", weekly=(slot(0, "09:00", "17:00"),), **berlin))
    # The two slots together cover a quarter of the 10:00-12:00 (local) window.
    partly = (slot(0, "11:30", "11:45"), slot(0, "11:40", "12:00"), slot(1, "10:00", "12:00"))
    await index.upsert(helper(id="half-hour", weekly=partly, **berlin))
    start = datetime(2026, 12, 7, 9, tzinfo=UTC)  # Monday 10:00 in Berlin
    req = request(window=Interval(start, start + timedelta(hours=2)))
    index.zones_for(req).add("Europe/Berlin")

    everything = await index.candidates(req, coverage_threshold=1.0)
    assert [c.helper.id for c in everything] == ["all-day"]
    assert reasons(everything.ruled_out) == Counter({("availability", ""): 1})
    assert check(helper(id="half-hour", weekly=partly, **berlin), req).rejection == (
        Rejection.AVAILABILITY
    )
    a_quarter = await index.candidates(req, coverage_threshold=0.25)
    assert sorted(c.helper.id for c in a_quarter) == ["all-day", "half-hour"]
    more = await index.candidates(req, coverage_threshold=0.26)
    assert [c.helper.id for c in more] == ["all-day"]


zones = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
slots = weekly_slots(15, max_size=6)
helpers = st.builds(
    lambda skills, langs, dlat, dlon, radius, zone, weekly, window: (
        skills,
        frozenset(langs),
        52.5 + dlat,
        13.4 + dlon,
        radius,
        zone,
        weekly,
        window,
    ),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(1, 5), min_size=1),
    st.lists(st.sampled_from(["en", "de", "fr"]), max_size=2),
    st.floats(-0.1, 0.1),
    st.floats(-0.15, 0.15),
    st.sampled_from([2.0, 5.0, 10.0, 12.5, 25.0]),
    zones,
    slots,
    st.sampled_from([None, 0, 30]),  # a one-off window starting this many hours from Monday
)
requests = st.tuples(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(1, 3), min_size=1, max_size=2),
    st.lists(st.sampled_from(["en", "de", "fr"]), max_size=2),
    st.booleans(),  # located
    st.integers(0, 7 * 24 * 4 - 1),  # start, in quarters of an hour from Monday 00:00 UTC
    st.integers(1, 12),  # length in quarters of an hour
    st.sampled_from([1e-6, 0.5, 1.0]),  # the coverage threshold: any, half, all
    st.booleans(),  # the window starts where the first helper's first weekly slot does
)


async def _compare(redis_url: str, specs: list, spec: tuple) -> None:  # type: ignore[type-arg]
    redis = Redis.from_url(redis_url, protocol=2)
    index = HelperIndex(redis, f"s{uuid.uuid4().hex[:8]}.")
    try:
        population: list[Helper] = []
        for n, (skills, langs, lat, lon, radius, zone, weekly, window) in enumerate(specs):
            windows = ()
            if window is not None:
                start = MONDAY + timedelta(hours=window)
                windows = (Interval(start, start + timedelta(hours=5)),)
            population.append(
                helper(
                    id=f"h{n}",
                    skills=skills,
                    languages=langs,
                    lat=lat,
                    lon=lon,
                    radius_km=radius,
                    timezone=zone,
                    weekly=weekly,
                    windows=windows,
                )
            )
        await index.apply((h.org, h.id, h) for h in population)
        skills, langs, located, quarter, length, threshold, in_slot = spec
        start = MONDAY + timedelta(minutes=15 * quarter)
        first = population[0]
        if in_slot and first.weekly:
            # Random windows seldom fall wholly within a slot: make some that do, so that
            # helpers the search must keep at a high threshold occur.
            day, minutes = first.weekly[0].weekday, first.weekly[0].start
            local = datetime.combine(MONDAY.date(), time(), time_zone(first.timezone))
            start = (local + timedelta(days=day, minutes=minutes)).astimezone(UTC)
            length = min(length, max(1, (first.weekly[0].end - minutes) // 15))
        req = request(
            skills=skills,
            languages=frozenset(langs),
            lat=52.5 if located else None,
            lon=13.4 if located else None,
            window=Interval(start, start + timedelta(minutes=15 * length)),
        )
        index.zones_for(req).update({"UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"})
        found = await index.candidates(req, limit=1000, coverage_threshold=threshold)
        # The same helpers (decoded from the index, as the search sees them), judged in Python.
        decoded = {c.helper.id: c.helper for c in found}
        returned = set(decoded)
        expected_out: Counter[tuple[str, str]] = Counter()
        for h in population:
            verdict = check(h, req, coverage_threshold=threshold)
            if h.id in returned:
                continue
            if verdict.rejection is None:
                raise AssertionError(f"{h} is eligible for {req} but was ruled out")
            expected_out[(verdict.rejection.value, verdict.detail)] += 1
        # Helpers never examined at all (not in the skill's sets at that level, or far beyond
        # reach) are in neither list; every one that was examined and ruled out is tallied
        # with check()'s own reason.
        tallied = reasons(found.ruled_out)
        assert tallied <= expected_out, (tallied, expected_out)
        assert found.examined == len(found) + sum(tallied.values())
    finally:
        await index.clear()
        await redis.aclose()


@settings(max_examples=150, deadline=None)
@given(specs=st.lists(helpers, min_size=1, max_size=20), spec=requests)
def test_the_search_rules_out_no_one_that_check_accepts(
    infra: Infra,
    specs: list,  # type: ignore[type-arg]
    spec: tuple,  # type: ignore[type-arg]
) -> None:
    asyncio.run(_compare(infra.redis_url, specs, spec))


async def test_the_search_goes_past_its_budget_only_while_nobody_fits(
    redis: Redis, prefix: str
) -> None:
    index = HelperIndex(redis, prefix)
    # Ten French speakers at the higher level come first in the set; the one German speaker,
    # at the lower level, comes last.
    for n in range(10):
        await index.upsert(
            helper(id=f"fr{n}", skills={"first_aid": 3}, languages=frozenset({"fr"}))
        )
    await index.upsert(helper(id="de", skills={"first_aid": 2}, languages=frozenset({"de"})))

    german = await index.candidates(request(languages=frozenset({"de"})), limit=4)
    assert [c.helper.id for c in german] == ["de"]
    assert german.examined == 11
    assert reasons(german.ruled_out) == Counter({("language", ""): 10})

    anyone = await index.candidates(request(languages=frozenset()), limit=4)
    assert anyone.examined == 4 and len(anyone) == 4
