"""The tail of a delivery that went out, settled together with the others answered meanwhile.

A delivered webhook or email leaves two things to do, in this order: its sent key, holding its
report (so that a crash before the report is published publishes the report again, never the
message), and then the report on {prefix}events. Done one delivery at a time, each of them is
a wait, a future and a resumption of the delivery's whole chain of coroutines; this does them
for every delivery answered in one loop turn (or while the previous group was out) as one
Redis write and one Kafka batch, and each delivery waits once, for its report to be in Kafka.
Offsets are committed only behind deliveries that are done, so never ahead of a report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from leanon_notification.reporter import Record, Reporter
from leanon_shared.coalesce import CoalescingRedis, GroupCommit

# sent key, the report kept in it, the report event, the delivery's wait
Pending = tuple[str, bytes, Record, asyncio.Future[None]]


class Settler(GroupCommit):
    def __init__(self, batch: CoalescingRedis, report: Reporter, sent_ttl_s: int) -> None:
        super().__init__()
        self._batch = batch
        self._report = report
        self._ttl = sent_ttl_s
        self._pending: list[Pending] = []

    async def __call__(self, sent_key: str, kept: bytes, record: Record) -> None:
        """Returns once the sent key is written and the report is in Kafka; raises what either
        met (the delivery is then tried again, and finds its sent key or its claim)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((sent_key, kept, record, future))
        self._queued()
        await future

    def _take(self) -> Coroutine[Any, Any, None] | None:
        if not self._pending:
            return None
        group, self._pending = self._pending, []
        return self._settle(group)

    async def _settle(self, group: list[Pending]) -> None:
        try:
            await self._batch.write_many([(key, kept, self._ttl) for key, kept, _, _ in group])
            await self._report.publisher.many([record for _, _, record, _ in group])
        except Exception as exc:
            for *_, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for *_, future in group:
            if not future.done():
                future.set_result(None)
