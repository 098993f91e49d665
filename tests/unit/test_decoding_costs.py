"""What keeps a decision cheap: shared decoding, cached search cells and keys, no survivors."""

import gc
from datetime import UTC, datetime, timedelta

import h3

from leanon_matching.convert import helper_from_json, pack_helper, packed_from_json, unpack_helper
from leanon_matching.domain.model import Interval
from leanon_matching.index import RING, TIERS, HelperIndex
from leanon_matching.reservations import Reservations
from tests.unit.factories import MONDAY, helper, request, slot


def test_helpers_sharing_languages_and_hours_still_decode_as_themselves() -> None:
    window = Interval(MONDAY, MONDAY + timedelta(hours=2))
    a = helper(id="a", skills={"driving": 2}, lat=52.5, lon=13.5, capacity=2)
    b = helper(id="b", skills={"first_aid": 5, "cooking": 1}, lat=48.5, lon=2.25, radius_km=25.0)
    c = helper(id="c", lat=52.5, lon=13.5, windows=(window,), weekly=(slot(4, "20:00", "02:00"),))
    for h in (a, b, c, a):
        assert unpack_helper(h.org, h.id, pack_helper(h)) == h


def test_decoded_candidates_leave_nothing_behind_for_the_collector() -> None:
    """A cached profile per helper made the collector pause for tens of ms every ~100
    requests at a million helpers; a decoded profile must die with its request."""
    packed = [pack_helper(helper(id=f"h{i}", lat=50 + i / 1e4)) for i in range(5000)]
    unpack_helper("o", "warm", packed[0])
    gc.collect()
    before = len(gc.get_objects())
    for i, raw in enumerate(packed):
        unpack_helper("o", f"h{i}", raw)
    gc.collect()
    assert len(gc.get_objects()) - before < 100


def test_search_cells_are_every_tiers_rings_nearest_first() -> None:
    index = HelperIndex(_NoScripts(), "p.")  # type: ignore[arg-type]
    for lat, lon in ((52.52, 13.405), (52.52, 13.405), (-33.9, 151.2)):
        expected: list[list[str]] = [[] for _ in range(RING + 1)]
        for tier in TIERS:
            center = h3.latlng_to_cell(lat, lon, tier.resolution)
            for d in range(RING + 1):
                expected[d] += [f"{tier.name}:{c}" for c in h3.grid_ring(center, d)]
        cells, ring0, ring1 = index.search_cells(request(lat=lat, lon=lon))
        assert cells == [c for ring in expected for c in ring]
        assert (ring0, ring1) == (len(expected[0]), len(expected[1]))


def test_recent_offer_keys_move_on_at_midnight() -> None:
    res = Reservations(_NoScripts(), "p.")  # type: ignore[arg-type]
    late = datetime(2026, 12, 7, 23, 59, tzinfo=UTC)
    today = res.load_query("o", late)
    assert today.recent_keys[0] == "p.offers:o:20261207"
    assert res.load_query("o", late - timedelta(hours=5)) is today
    tomorrow = res.load_query("o", late + timedelta(minutes=2))
    assert tomorrow.recent_keys[:2] == ("p.offers:o:20261208", "p.offers:o:20261207")
    assert len(tomorrow.recent_keys) == 7
    assert res.load_query("other", late).recent_keys[0] == "p.offers:other:20261207"


class _NoScripts:
    def register_script(self, script: str) -> None:
        return None


def test_a_rebuild_packs_records_exactly_as_updates_do() -> None:
    window = Interval(MONDAY, MONDAY + timedelta(hours=2))
    record = {
        "org": "o",
        "helper_id": "h",
        "profile": {
            "skills": {"first_aid": 3, "driving": 1},
            "languages": ["es", "en", "en"],
            "location": {"lat": 40.4, "lon": -3.7},
            "radius_km": 12.5,
            "availability": {
                "timezone": "Europe/Madrid",
                "weekly": [
                    {"day": "fri", "start": "22:00", "end": "02:00"},
                    {"day": "sun", "start": "00:00", "end": "24:00"},
                ],
                "windows": [{"start": window.start.isoformat(), "end": window.end.isoformat()}],
            },
            "capacity": 3,
        },
    }
    remote = {"org": "o", "helper_id": "r", "profile": {"skills": {"it_support": 5}}}
    for r in (record, remote):
        assert packed_from_json(r).packed == pack_helper(helper_from_json(r))
