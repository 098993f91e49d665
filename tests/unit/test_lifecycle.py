"""The request/offer lifecycle aggregate: each command's effect, and repeats change nothing."""

from leanon_matching.domain.lifecycle import Offer, RequestState


def offer(oid: str, helper: str) -> Offer:
    return Offer(oid, helper, "offered", 0.8, {"skill": 1.0}, "2026-12-01T09:00:00+00:00")


def state(needed: int = 1) -> RequestState:
    return RequestState(org="o", request_id="r", helpers_needed=needed)


def types(changes: list) -> list[str]:  # type: ignore[type-arg]
    return [c.type.rsplit(".", 2)[-2] + "." + c.type.rsplit(".", 1)[-1] for c in changes]


def test_accepting_the_only_needed_offer_matches_the_request() -> None:
    s = state()
    s.add_offer(offer("o1", "h1"))
    assert s.status == "offered" and s.open_slots == 0
    assert types(s.answer("o1", "accepted")) == ["offer.accepted", "request.matched"]
    assert s.status == "matched"
    assert s.answer("o1", "accepted") == []  # a redelivered answer changes nothing


def test_decline_frees_a_slot_and_the_helper_is_never_asked_again() -> None:
    s = state()
    s.add_offer(offer("o1", "h1"))
    changes = s.answer("o1", "declined")
    assert types(changes) == ["offer.declined"] and changes[0].release == ["o1"]
    assert s.open_slots == 1 and "h1" in s.asked


def test_timeout_expires_only_open_offers() -> None:
    s = state()
    s.add_offer(offer("o1", "h1"))
    assert types(s.time_out("o1")) == ["offer.expired"]
    assert s.time_out("o1") == []
    s.add_offer(offer("o2", "h2"))
    s.answer("o2", "accepted")
    assert s.time_out("o2") == []


def test_several_helpers_needed_match_only_when_all_accept() -> None:
    s = state(needed=2)
    s.add_offer(offer("o1", "h1"))
    s.add_offer(offer("o2", "h2"))
    assert types(s.answer("o1", "accepted")) == ["offer.accepted"]
    assert s.status == "offered"
    assert types(s.answer("o2", "accepted")) == ["offer.accepted", "request.matched"]


def test_cancel_withdraws_open_offers_and_accepted_assignments() -> None:
    s = state(needed=2)
    s.add_offer(offer("o1", "h1"))
    s.add_offer(offer("o2", "h2"))
    s.answer("o1", "accepted")
    changes = s.cancel()
    assert types(changes) == ["offer.withdrawn", "offer.withdrawn", "request.cancelled"]
    assert sorted(oid for c in changes for oid in c.release) == ["o1", "o2"]
    assert s.cancel() == []


def test_drop_after_accept_reopens_the_request() -> None:
    s = state()
    s.add_offer(offer("o1", "h1"))
    s.answer("o1", "accepted")
    changes = s.answer("o1", "dropped")
    assert types(changes) == ["offer.dropped"] and s.status == "offered" and s.open_slots == 1


def test_unmatched_when_the_search_finds_nobody_and_nothing_is_open() -> None:
    s = state()
    assert types(s.settle_after_search("no helper with skill x")) == ["request.unmatched"]
    assert s.status == "unmatched" and s.reason == "no helper with skill x"


def test_expiry_gives_up_unless_matched() -> None:
    s = state()
    s.add_offer(offer("o1", "h1"))
    assert types(s.expire()) == ["offer.withdrawn", "request.expired"]
    m = state()
    m.add_offer(offer("o1", "h1"))
    m.answer("o1", "accepted")
    assert m.expire() == []


def test_state_survives_a_round_trip_through_its_stored_form() -> None:
    s = state(needed=2)
    s.add_offer(offer("o1", "h1"))
    s.answer("o1", "declined")
    back = RequestState.from_dict(s.to_dict())
    assert back.to_dict() == s.to_dict()
