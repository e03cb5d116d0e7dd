"""Workflows that stand in for others in tests, kept out of the test modules so Temporal's sandbox
imports only this small file (and not pytest, httpx or psycopg) when it loads them."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow

from workflows.alert_types import WebhookRetry
from workflows.batch_types import WORKFLOW_NAME, FrameBatchInput

with workflow.unsafe.imports_passed_through():
    from workflows.alert_delivery import start_webhook_delivery


@dataclass
class AlertingParentInput:
    url: str
    delivery_id: str
    retry: WebhookRetry


@workflow.defn
class AlertingParentWorkflow:
    """Does what a batch does with a confident defect: start the alert and finish without waiting."""

    @workflow.run
    async def run(self, input: AlertingParentInput) -> str:
        return await start_webhook_delivery(input.url, "defect.detected", {"frame_id": "f-1"}, input.delivery_id,
                                            input.retry)


@workflow.defn(name=WORKFLOW_NAME)
class RecordingBatchWorkflow:
    """Registered under FrameBatchWorkflow's name: returns its input, so a test reads exactly which
    frames a camera stream put into each batch."""

    @workflow.run
    async def run(self, input: FrameBatchInput) -> FrameBatchInput:
        return input
