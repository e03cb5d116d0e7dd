"""Every field a stored history carries still exists on today's dataclass.

Temporal's converter ignores a JSON key that names no field of the dataclass it decodes into, so a
renamed or removed field decodes as its default in every run begun before: replay succeeds, and the run
silently takes another branch (`local_db_writes` renamed `steps_version` did exactly that). This test
walks every payload of every stored history (workflow inputs and results, activity inputs and results,
local activities' results, signals, updates and child workflow inputs), resolves the dataclass it decodes
into from today's type hints, and fails on any key that names no field. A field may gain a default and
stay; it may never be renamed or dropped while a stored history holds it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pkgutil
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payloads
from temporalio.client import WorkflowHistory

import activities
from tests.history_recorder import load_history, registered_workflows, stored_histories, workflow_type


def activity_functions() -> dict[str, Callable[..., Any]]:
    """Every activity of our activity classes by the name histories carry."""
    found: dict[str, Callable[..., Any]] = {}
    for module_info in pkgutil.iter_modules(activities.__path__):
        module = importlib.import_module(f"activities.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            for _, fn in inspect.getmembers(cls, inspect.isfunction):
                definition = activity._Definition.from_callable(fn)
                if definition is not None and definition.name:
                    found.setdefault(definition.name, fn)
    return found


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    return typing.get_type_hints(fn, include_extras=False)


def parameter_types(fn: Callable[..., Any]) -> list[Any]:
    hints = _hints(fn)
    return [hints.get(name, Any) for name in list(inspect.signature(fn).parameters)[1:]]  # after self


def return_type(fn: Callable[..., Any]) -> Any:
    return _hints(fn).get("return", Any)


def unknown_keys(value: Any, tp: Any, path: str) -> Iterator[str]:
    """`path.key` for every key of `value` that names no field of the dataclass `tp` it decodes into."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        candidates = [a for a in typing.get_args(tp) if a is not type(None)]
        dataclass_args = [a for a in candidates if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and len(dataclass_args) == 1:
            yield from unknown_keys(value, dataclass_args[0], path)
        elif len(candidates) == 1:
            yield from unknown_keys(value, candidates[0], path)
        return
    if origin in (list, tuple, set, frozenset) and isinstance(value, list):
        args = typing.get_args(tp)
        for i, item in enumerate(value):
            yield from unknown_keys(item, args[0] if args else Any, f"{path}[{i}]")
        return
    if origin is dict and isinstance(value, dict):
        args = typing.get_args(tp)
        for key, item in value.items():
            yield from unknown_keys(item, args[1] if len(args) == 2 else Any, f"{path}[{key!r}]")
        return
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, dict):
        fields = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        for key, item in value.items():
            if key not in names:
                yield f"{path}.{key} (no field of {tp.__module__}.{tp.__qualname__})"
            else:
                yield from unknown_keys(item, fields[key], f"{path}.{key}")


def decoded(payloads: Payloads | None) -> list[Any]:
    out = []
    for payload in payloads.payloads if payloads else []:
        if payload.metadata.get("encoding") == b"json/plain":
            out.append(json.loads(payload.data))
        else:
            out.append(None)  # binary/null or protobuf: no dataclass to hold
    return out


def check(found: list[str], payloads: Payloads | None, types_: list[Any], where: str) -> None:
    for i, (value, tp) in enumerate(zip(decoded(payloads), types_, strict=False)):
        found.extend(unknown_keys(value, tp, f"{where}[{i}]"))


def unknown_fields(history: WorkflowHistory) -> list[str]:
    workflows = registered_workflows()
    acts = activity_functions()
    defn = workflow._Definition.must_from_class(workflows[workflow_type(history)])
    found: list[str] = []
    scheduled: dict[int, str] = {}
    for event in history.events:
        e = event.event_id
        if event.HasField("workflow_execution_started_event_attributes"):
            check(found, event.workflow_execution_started_event_attributes.input, parameter_types(defn.run_fn),
                  "workflow input")
        elif event.HasField("workflow_execution_completed_event_attributes"):
            check(found, event.workflow_execution_completed_event_attributes.result, [return_type(defn.run_fn)],
                  "workflow result")
        elif event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[e] = attrs.activity_type.name
            fn = acts.get(attrs.activity_type.name)
            if fn is not None:
                check(found, attrs.input, parameter_types(fn), f"event {e} {attrs.activity_type.name} input")
        elif event.HasField("activity_task_completed_event_attributes"):
            done = event.activity_task_completed_event_attributes
            name = scheduled.get(done.scheduled_event_id, "")
            if (fn := acts.get(name)) is not None:
                check(found, done.result, [return_type(fn)], f"event {e} {name} result")
        elif event.HasField("marker_recorded_event_attributes"):
            marker = event.marker_recorded_event_attributes
            if marker.marker_name == "core_local_activity" and "data" in marker.details:
                name = json.loads(marker.details["data"].payloads[0].data).get("activity_type", "")
                if (fn := acts.get(name)) is not None and "result" in marker.details:
                    check(found, marker.details["result"], [return_type(fn)], f"event {e} local {name} result")
        elif event.HasField("workflow_execution_signaled_event_attributes"):
            signalled = event.workflow_execution_signaled_event_attributes
            signal = defn.signals.get(signalled.signal_name)
            if signal is not None and signal.fn is not None:
                check(found, signalled.input, parameter_types(signal.fn), f"event {e} signal {signalled.signal_name}")
        elif event.HasField("workflow_execution_update_accepted_event_attributes"):
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            update = defn.updates.get(request.input.name)
            if update is not None and update.fn is not None:
                check(found, request.input.args, parameter_types(update.fn), f"event {e} update {request.input.name}")
        elif event.HasField("start_child_workflow_execution_initiated_event_attributes"):
            child = event.start_child_workflow_execution_initiated_event_attributes
            child_class = workflows.get(child.workflow_type.name)
            if child_class is not None:
                run = workflow._Definition.must_from_class(child_class).run_fn
                check(found, child.input, parameter_types(run), f"event {e} child {child.workflow_type.name} input")
    return found


@pytest.mark.parametrize("path", stored_histories(), ids=lambda p: p.stem)
def test_every_field_a_stored_history_holds_exists_today(path: Path):
    assert unknown_fields(load_history(path)) == []


def test_a_renamed_field_is_caught():
    """The guard itself: the field `steps_version` of a stored review task's input, renamed back to what
    it was once called, names no field of today's ReviewTaskInput."""
    path = next(p for p in stored_histories() if p.stem.endswith("_steps1"))
    raw = json.loads(path.read_text())
    started = raw["events"][0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
    import base64

    body = json.loads(base64.b64decode(started["data"]))
    body["local_db_writes"] = body.pop("steps_version")
    started["data"] = base64.b64encode(json.dumps(body).encode()).decode()
    found = unknown_fields(WorkflowHistory.from_json(path.stem, raw))
    assert found == ["workflow input[0].local_db_writes (no field of workflows.review_types.ReviewTaskInput)"]
