"""Temporal Schedules the worker keeps: created at its start, or brought up to the settings."""

from __future__ import annotations

from collections.abc import Callable

from temporalio.client import Client, Schedule, ScheduleAlreadyRunningError, ScheduleUpdate, ScheduleUpdateInput


async def ensure_schedule(client: Client, schedule_id: str, wanted: Schedule,
                          unchanged: Callable[[Schedule], bool] | None = None) -> str:
    """Create the Schedule, or give an existing one `wanted` unless `unchanged(current)` says it has it
    already (without one, every start updates it: cheaper than decoding the old action's arguments to
    compare them). 'created', 'updated' or 'unchanged'."""
    try:
        await client.create_schedule(schedule_id, wanted)
        return "created"
    except ScheduleAlreadyRunningError:
        pass
    handle = client.get_schedule_handle(schedule_id)
    if unchanged is not None and unchanged((await handle.describe()).schedule):
        return "unchanged"

    def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=wanted)

    await handle.update(update)
    return "updated"
