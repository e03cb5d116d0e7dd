"""`heartbeating()`: a block that ends within the interval sends no heartbeat (the SDK would send a first
one to the server at once), a longer one heartbeats while it runs and stops when it ends."""

from __future__ import annotations

import asyncio

from temporalio.testing import ActivityEnvironment

from activities.heartbeat import heartbeating
from tests.polling import eventually


def recording_heartbeats() -> tuple[ActivityEnvironment, list[tuple]]:
    """An activity environment, and the heartbeats its activity sends, as they arrive."""
    env = ActivityEnvironment()
    beats: list[tuple] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    return env, beats


async def test_a_short_block_sends_no_heartbeat() -> None:
    env, beats = recording_heartbeats()

    async def short() -> None:
        async with heartbeating(every_s=5.0):
            await asyncio.sleep(0.05)

    await env.run(short)
    assert beats == []


async def test_a_long_block_heartbeats_until_it_ends() -> None:
    env, beats = recording_heartbeats()

    async def long() -> int:
        async with heartbeating(every_s=0.02):
            await eventually(lambda: asyncio.sleep(0, result=len(beats) >= 3), timeout=10,
                             message="three heartbeats", interval=0.01)
        return len(beats)

    counted = await env.run(long)
    assert counted >= 3
    # The ticker is cancelled and awaited as the block ends: nothing is left to beat after it.
    assert len(beats) == counted
    assert not [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "").endswith("<locals>.beat")]
