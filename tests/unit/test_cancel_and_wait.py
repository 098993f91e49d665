"""Stopping a background task even when a library drops the first cancellation."""

import asyncio

import pytest

from leanon_shared.runtime import cancel_and_wait


async def test_a_task_that_drops_a_cancellation_is_cancelled_again() -> None:
    dropped = 0
    started = asyncio.Event()

    async def stubborn() -> None:
        nonlocal dropped
        while True:
            try:
                started.set()
                await asyncio.Event().wait()  # until cancelled
            except asyncio.CancelledError:
                if dropped:
                    raise
                dropped += 1  # as asyncio.wait_for on 3.11 can: carry on as if nothing came
                task.uncancel()

    task = asyncio.create_task(stubborn())
    async with asyncio.timeout(5):
        await started.wait()
        await cancel_and_wait(task, every_s=0.01)
    assert task.cancelled()
    assert dropped == 1


async def test_a_task_that_fails_on_the_way_out_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = asyncio.Event()

    async def failing() -> None:
        try:
            started.set()
            await asyncio.Event().wait()  # until cancelled
        finally:
            raise RuntimeError("boom")

    task = asyncio.create_task(failing(), name="failing")
    async with asyncio.timeout(5):
        await started.wait()
        await cancel_and_wait(task)
    assert task.done() and isinstance(task.exception(), RuntimeError)
    assert "failing failed while stopping" in caplog.text
