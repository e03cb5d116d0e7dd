"""Stored workflow histories: record one from a test run, and replay any against today's workflow code.

A history lives in tests/histories/<name>.json, and its name starts with the workflow it belongs to
(`frame_batch_`, `review_task_`, `camera_stream_`, `webhook_delivery_`: the type name in snake case,
without `Workflow`). A test stores one with a single line, `await record_history(handle, "<name>")`:
the file is written when it is missing, or again when SIGHTLINE_RECORD_HISTORY=1 is set, and the fresh
history is replayed at once. Re-record on purpose only: a stored history stands for runs started on
older code, which must keep replaying; give the new recording a new name rather than overwrite one
that such runs depend on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from temporalio import workflow
from temporalio.api.history.v1 import WorkflowExecutionStartedEventAttributes
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowHistory
from temporalio.worker import Replayer

from tests.polling import eventually

HISTORIES = Path(__file__).parent / "histories"
RECORD_ENV = "SIGHTLINE_RECORD_HISTORY"


def registered_workflows() -> dict[str, type]:
    """The orchestration worker's workflow classes by the type name histories carry."""
    # Imported here: conftest loads this module in every session, and the worker pulls in every workflow
    # and activity module.
    from workers.orchestration import WORKFLOWS

    # _Definition is exported by temporalio.workflow; it is where @workflow.defn keeps the type name.
    return {workflow._Definition.must_from_class(cls).name or cls.__name__: cls for cls in WORKFLOWS}


def started_event(history: WorkflowHistory) -> WorkflowExecutionStartedEventAttributes:
    first = history.events[0] if history.events else None
    if first is None or not first.HasField("workflow_execution_started_event_attributes"):
        raise ValueError(f"history {history.workflow_id} does not begin with WorkflowExecutionStarted")
    return first.workflow_execution_started_event_attributes


def workflow_type(history: WorkflowHistory) -> str:
    """The workflow type named by the history's first event (WorkflowExecutionStarted)."""
    return started_event(history).workflow_type.name


def name_prefix(type_name: str) -> str:
    """`ReviewTaskWorkflow` -> `review_task_`: how the names of its stored histories begin."""
    base = type_name.removesuffix("Workflow")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower() + "_"


def stored_histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


def history_from_json(text: str, fallback_id: str = "") -> WorkflowHistory:
    """A stored history under the workflow id its run had, which replay needs: a workflow may derive ids
    from its own (a review task's escalation webhook does). The id travels in the first event."""
    parsed = WorkflowHistory.from_json(fallback_id, text)
    return WorkflowHistory(started_event(parsed).workflow_id or fallback_id, parsed.events)


def load_history(path: Path) -> WorkflowHistory:
    return history_from_json(path.read_text(), fallback_id=path.stem)


async def replay(history: WorkflowHistory) -> None:
    """Replay against the class the orchestration worker registers for the history's type, with the
    worker's own sandbox runner; raises on non-determinism, and on a type no worker runs."""
    from workers.orchestration import WORKFLOW_RUNNER

    type_name = workflow_type(history)
    cls = registered_workflows().get(type_name)
    if cls is None:
        raise LookupError(f"history {history.workflow_id} is of workflow type {type_name!r}, which the "
                          f"orchestration worker does not register (it runs {sorted(registered_workflows())})")
    await Replayer(workflows=[cls], workflow_runner=WORKFLOW_RUNNER).replay_workflow(history)


class HistoryRecorder:
    """`await recorder(handle, name)`: the finished run's history, replayed and stored under `name`."""

    def __init__(self, directory: Path = HISTORIES, overwrite: bool = False) -> None:
        self.directory = directory
        self.overwrite = overwrite

    @classmethod
    def from_env(cls) -> HistoryRecorder:
        return cls(overwrite=os.environ.get(RECORD_ENV) == "1")

    async def __call__(self, handle: WorkflowHandle, name: str, timeout: float = 30.0) -> WorkflowHistory:
        # The handle's run (its run_id), or the latest run of its workflow id; a run still going would
        # store a history that stops half-way.
        async def closed() -> bool:
            return (await handle.describe()).status != WorkflowExecutionStatus.RUNNING

        await eventually(closed, timeout=timeout, message=f"{handle.id} to close before recording {name}")
        fetched = await handle.fetch_history()
        # The dev server fills in the workflow id here, the time-skipping server does not: fill it in, so
        # that the file alone replays under the id the run had.
        started = started_event(fetched)
        started.workflow_id = started.workflow_id or handle.id
        prefix = name_prefix(workflow_type(fetched))
        if not name.startswith(prefix):
            raise ValueError(f"a history of {workflow_type(fetched)} is stored under a name that starts with "
                             f"{prefix!r}, not {name!r}")
        text = fetched.to_json()
        # Replay what the file will hold, so the recording test proves the stored history replays.
        history = history_from_json(text)
        await replay(history)
        path = self.directory / f"{name}.json"
        if self.overwrite or not path.exists():
            partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            partial.write_text(text + "\n")
            partial.replace(path)  # atomic: a concurrent run never reads half a file
        return history
