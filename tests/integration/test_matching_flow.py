"""Matching end to end on real Kafka and Redis: re-offers, fan-out, several helpers, cancel,
expiry, an index rebuilt after FLUSHDB, and two instances that never double-book."""

from collections import Counter
from datetime import timedelta

from leanon_intake.readmodel import NewStatus
from leanon_shared import cloudevents
from tests.conftest import Infra, wait_for
from tests.integration.harness import helper, rig, submission, tomorrow


async def test_decline_and_timeout_move_to_the_next_best_helper(infra: Infra, prefix: str) -> None:
    async with rig(infra, prefix, offer_ttl_s=1.5) as r:
        for name, lat in (("near", 52.511), ("mid", 52.53), ("far", 52.56)):
            await r.intake.upsert_helper("o", name, helper(location={"lat": lat, "lon": 13.39}))
        await wait_for(lambda: r.redis.exists(f"{prefix}h:o:far"), what="helpers indexed")
        await r.intake.submit_request("o", submission(), "req")
        first = (await r.wait("req", "offer.created"))[0].data
        assert first["helper_id"] == "near"
        await r.intake.answer_offer("o", first["offer_id"], "declined")
        second = (await r.wait("req", "offer.created", 2))[1].data
        assert second["helper_id"] == "mid"
        await r.wait("req", "offer.expired")  # nobody answered within the TTL
        third = (await r.wait("req", "offer.created", 3))[2].data
        assert third["helper_id"] == "far"
        await r.intake.answer_offer("o", third["offer_id"], "accepted")
        await r.wait("req", "request.matched")
        helpers = [o["helper_id"] for o in r.events.offers("req")]
        assert len(helpers) == len(set(helpers)) == 3  # never the same helper twice


async def test_critical_fans_out_and_the_first_accept_wins(infra: Infra, prefix: str) -> None:
    async with rig(infra, prefix, critical_fanout=3) as r:
        for i in range(4):
            await r.intake.upsert_helper("o", f"h{i}", helper())
        await wait_for(lambda: r.redis.exists(f"{prefix}h:o:h3"), what="helpers indexed")
        await r.intake.submit_request("o", submission(urgency="critical"), "crit")
        offers = [e.data for e in await r.wait("crit", "offer.created", 3)]
        await r.intake.answer_offer("o", offers[1]["offer_id"], "accepted")
        await r.wait("crit", "request.matched")
        withdrawn = await r.wait("crit", "offer.withdrawn", 2)
        assert {w.data["offer_id"] for w in withdrawn} == {
            offers[0]["offer_id"],
            offers[2]["offer_id"],
        }
        late = await r.intake.offers.move("o", offers[0]["offer_id"], "accepted")
        assert late == "withdrawn"  # a late accept finds the offer closed


async def test_several_helpers_needed_get_distinct_helpers(infra: Infra, prefix: str) -> None:
    async with rig(infra, prefix) as r:
        for i in range(3):
            await r.intake.upsert_helper("o", f"h{i}", helper(capacity=3))
        await wait_for(lambda: r.redis.exists(f"{prefix}h:o:h2"), what="helpers indexed")
        await r.intake.submit_request("o", submission(helpers_needed=3), "many")
        offers = [e.data for e in await r.wait("many", "offer.created", 3)]
        assert len({o["helper_id"] for o in offers}) == 3
        for o in offers[:2]:
            await r.intake.answer_offer("o", o["offer_id"], "accepted")
        await r.wait("many", "offer.accepted", 2)
        assert not r.events.of("many", "request.matched")
        await r.intake.answer_offer("o", offers[2]["offer_id"], "accepted")
        matched = (await r.wait("many", "request.matched"))[0]
        assert len(matched.data["assignments"]) == 3


async def test_cancel_withdraws_open_offers_and_frees_the_helper(infra: Infra, prefix: str) -> None:
    async with rig(infra, prefix) as r:
        await r.intake.upsert_helper("o", "solo", helper())
        await wait_for(lambda: r.redis.exists(f"{prefix}h:o:solo"), what="helper indexed")
        await r.intake.submit_request("o", submission(), "c1")
        await r.wait("c1", "offer.created")
        await r.intake.statuses.create(
            NewStatus("o", "c1", "x", 1, "fp")
        )  # intake would have written it
        await r.intake.cancel_request("o", "c1")
        await r.wait("c1", "offer.withdrawn")
        await r.wait("c1", "request.cancelled")
        await r.intake.submit_request("o", submission(), "c2")  # same window: solo is free
        assert (await r.wait("c2", "offer.created"))[0].data["helper_id"] == "solo"


async def test_an_unanswered_request_expires_at_its_expiry(infra: Infra, prefix: str) -> None:
    async with rig(infra, prefix, offer_ttl_s=60) as r:
        await r.intake.upsert_helper("o", "h", helper())
        await wait_for(lambda: r.redis.exists(f"{prefix}h:o:h"), what="helper indexed")
        start = tomorrow()
        from datetime import UTC, datetime

        soon = datetime.now(UTC) + timedelta(seconds=2)
        await r.intake.submit_request("o", submission(start, expires_at=soon.isoformat()), "exp")
        await r.wait("exp", "offer.created")
        await r.wait("exp", "request.expired", timeout=15)
        assert r.events.of("exp", "offer.withdrawn")


async def test_index_is_rebuilt_from_the_topic_after_flushdb(infra: Infra, prefix: str) -> None:
    async with rig(infra, prefix, redis_db=7) as r:
        for i in range(30):
            await r.intake.upsert_helper("o", f"h{i}", helper())
        await r.intake.remove_helper("o", "h0")
        await wait_for(lambda: r.redis.exists(f"{prefix}h:o:h29"), what="helpers indexed")
    from redis.asyncio import Redis

    db7 = Redis.from_url(infra.redis_url.rsplit("/", 1)[0] + "/7", protocol=2)
    await db7.flushdb()
    async with rig(infra, prefix, redis_db=7) as r:  # a restart finds Redis empty
        assert await r.redis.get(f"{prefix}index:version") is not None
        assert not await r.redis.exists(f"{prefix}h:o:h0")  # removal replayed too
        assert await r.redis.exists(f"{prefix}h:o:h29")
        await r.intake.submit_request("o", submission(), "after")
        await r.wait("after", "offer.created")
    await db7.flushdb()
    await db7.aclose()


async def test_two_instances_never_double_book(infra: Infra, prefix: str) -> None:
    async with rig(infra, prefix, instances=2) as r:
        # Five helpers with a wide radius; forty requests spread over several regions (and so
        # partitions, and so both instances) all want the same hour.
        for i in range(5):
            await r.intake.upsert_helper("o", f"h{i}", helper(radius_km=200, capacity=2))
        await wait_for(lambda: r.redis.exists(f"{prefix}h:o:h4"), what="helpers indexed")
        start = tomorrow()
        spots = [(52.52, 13.40), (53.55, 10.0), (51.34, 12.37), (52.37, 9.73), (51.05, 13.74)]
        for n in range(40):
            lat, lon = spots[n % len(spots)]
            await r.intake.submit_request(
                "o", submission(start, location={"lat": lat, "lon": lon}), f"r{n}"
            )

        async def settled() -> bool:
            done = {
                e.subject
                for e in r.events.seen
                if e.type.endswith(("offer.created", "request.unmatched"))
            }
            return len(done) >= 40

        await wait_for(settled, timeout=40, what="every request offered or unmatched")
        per_helper = Counter(
            e.data["helper_id"] for e in r.events.seen if e.type.endswith("offer.created")
        )
        assert sum(per_helper.values()) == 10  # five helpers x capacity two
        assert all(n <= 2 for n in per_helper.values())


async def test_a_dropped_assignment_goes_to_the_next_helper(infra: Infra, prefix: str) -> None:
    async with rig(infra, prefix) as r:
        await r.intake.upsert_helper("o", "first", helper(location={"lat": 52.511, "lon": 13.39}))
        await r.intake.upsert_helper("o", "second", helper(location={"lat": 52.55, "lon": 13.39}))
        await wait_for(lambda: r.redis.exists(f"{prefix}h:o:second"), what="helpers indexed")
        await r.intake.submit_request("o", submission(), "drop")
        offer = (await r.wait("drop", "offer.created"))[0].data
        await r.intake.answer_offer("o", offer["offer_id"], "accepted")
        await r.wait("drop", "request.matched")
        await r.intake.answer_offer("o", offer["offer_id"], "dropped")
        await r.wait("drop", "offer.dropped")
        replacement = (await r.wait("drop", "offer.created", 2))[1].data
        assert replacement["helper_id"] == "second"
        load = await r.redis.hgetall(f"{prefix}load:o:first")
        assert load == {}  # the dropped helper's slot is free again


async def test_redelivered_commands_change_nothing(infra: Infra, prefix: str) -> None:
    async with rig(infra, prefix) as r:
        await r.intake.upsert_helper("o", "h", helper(capacity=2))
        await wait_for(lambda: r.redis.exists(f"{prefix}h:o:h"), what="helper indexed")
        sub = submission()
        for _ in range(3):  # the same request three times, as a retrying producer would
            await r.intake.bus.publish(
                r.intake.topics.requests,
                cloudevents.CloudEvent(
                    type="org.leanon.request.submitted",
                    source="/test",
                    id="same-event",
                    subject="dup",
                    data={
                        "request_id": "dup",
                        "region": "r1",
                        "request": sub.model_dump(mode="json") | {"id": "dup"},
                    },
                    extensions={"orgid": "o"},
                ),
                "r1",
            )
        offer = (await r.wait("dup", "offer.created"))[0].data
        for _ in range(3):
            await r.intake.answer_offer("o", offer["offer_id"], "accepted")
        await r.wait("dup", "request.matched")
        await r.wait("dup", "offer.accepted")
        await r.intake.submit_request("o", submission(), "marker")  # after all of the above
        await r.wait("marker", "offer.created")
        assert len(r.events.of("dup", "offer.created")) == 1
        assert len(r.events.of("dup", "request.matched")) == 1
        assert len(await r.redis.hgetall(f"{prefix}load:o:h")) == 2  # dup and marker, once each
