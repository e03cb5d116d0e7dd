import json

import structlog
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from infra.log import configure_logging, get_logger


@activity.defn(name="log_something")
async def log_something() -> None:
    get_logger("test").info("inside", frames=3)


async def test_activity_lines_carry_workflow_run_and_activity(capsys):
    configure_logging(json=True, service="worker")
    try:
        env = ActivityEnvironment()
        await env.run(log_something)
        get_logger("test").info("outside")
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    finally:
        structlog.reset_defaults()
    inside, outside = lines
    info = env.info
    assert inside["event"] == "inside" and inside["frames"] == 3 and inside["service"] == "worker"
    assert (inside["workflow_id"], inside["run_id"], inside["activity"]) == (
        info.workflow_id, info.workflow_run_id, info.activity_type)
    assert "workflow_id" not in outside and outside["level"] == "info"


def test_console_output_on_a_terminal_is_not_json(capsys):
    configure_logging(json=False)
    try:
        get_logger("test").info("readable", camera="line-1")
        out = capsys.readouterr().out
    finally:
        structlog.reset_defaults()
    assert "readable" in out and "camera" in out and not out.lstrip().startswith("{")
