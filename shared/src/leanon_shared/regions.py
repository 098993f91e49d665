"""Region cells: the partition key that gives every request exactly one matching owner."""

from __future__ import annotations

import zlib

import h3

# H3 resolution 3 cells average ~12,400 km²: a city and its surroundings share one owner.
REGION_RESOLUTION = 3
REMOTE_SPREAD = 64


def region_key(request_id: str, lat: float | None, lon: float | None) -> str:
    """The request's partition key: its H3 region cell, or a spread key for remote help."""
    if lat is None or lon is None:
        return f"remote-{zlib.crc32(request_id.encode()) % REMOTE_SPREAD}"
    return str(h3.latlng_to_cell(lat, lon, REGION_RESOLUTION))
