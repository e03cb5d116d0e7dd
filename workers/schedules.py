"""Temporal Schedules the worker keeps: created at its start, or brought up to the settings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)


def every(seconds: float, run: Any, arg: Any, *, workflow_id: str, task_queue: str) -> Schedule:
    """A Schedule that starts `run(arg)` every `seconds`. A run still going when the next is due: that
    one is skipped, never two at once (each of our scheduled workflows walks shared state)."""
    return Schedule(
        action=ScheduleActionStartWorkflow(run, arg, id=workflow_id, task_queue=task_queue),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=seconds))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


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
