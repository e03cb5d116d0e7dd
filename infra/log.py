"""structlog set-up: JSON lines in services, readable console output on a terminal.

Inside a Temporal activity every line carries the workflow id, run id and activity name, so a log
line can be traced back to the history in the Temporal UI.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor


def _temporal_context(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    from temporalio import activity, workflow

    if activity.in_activity():
        task = activity.info()
        event_dict.setdefault("workflow_id", task.workflow_id)
        event_dict.setdefault("run_id", task.workflow_run_id)
        event_dict.setdefault("activity", task.activity_type)
        event_dict.setdefault("attempt", task.attempt)
    elif workflow.in_workflow():
        run = workflow.info()
        event_dict.setdefault("workflow_id", run.workflow_id)
        event_dict.setdefault("run_id", run.run_id)
    return event_dict


def configure_logging(json: bool | None = None, level: str = "INFO", service: str | None = None) -> None:
    if json is None:
        json = not sys.stdout.isatty()
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _temporal_context,
    ]
    if service:
        processors.insert(0, lambda _l, _m, ev: {"service": service, **ev})
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # No file argument: each line goes to the sys.stdout of that moment, not one captured at set-up
        # (which a test harness or a daemonising parent may have closed since).
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    # Route the standard library's logging (uvicorn, temporalio, ray) through the same output.
    logging.basicConfig(level=level.upper(), stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s %(message)s")


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
