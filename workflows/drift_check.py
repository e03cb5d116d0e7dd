"""DriftCheckWorkflow: compare a site's recent frames with production's reference (Evidently), record
the report, and on drift apply the policy: start a RetrainingWorkflow when enough reviewed labels exist
and the last retraining is older than the cooldown, otherwise send a signed `drift.detected` webhook and
wait for labels. Every decision is recorded with its reason.

Started per site on demand (POST /v1/drift-checks), and by a Temporal Schedule with no site: that run
checks every site with recent frames, one child per site.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

from workflows import search_attributes as sa
from workflows.alert_delivery import start_webhook_delivery
from workflows.drift_types import (
    DRIFT_EVENT,
    WORKFLOW_NAME,
    DriftCheckInput,
    DriftCheckResult,
    DriftDecision,
    DriftPolicy,
    DriftPolicyInput,
    DriftReportSummary,
    DriftStatus,
    ListSitesInput,
    Readiness,
    ReadinessInput,
    RecordDecisionInput,
    RunDriftCheckInput,
    decide,
    drift_check_workflow_id,
)
from workflows.policies import DB_RETRY, DB_TIMEOUT, DRIFT_RETRY, DRIFT_TIMEOUT
from workflows.retraining_types import WORKFLOW_NAME as RETRAINING_WORKFLOW
from workflows.retraining_types import RetrainingInput, RetrainingTrigger, retraining_workflow_id

with workflow.unsafe.imports_passed_through():
    from activities.drift import DriftActivities


@workflow.defn(name=WORKFLOW_NAME)
class DriftCheckWorkflow:
    @workflow.run
    async def run(self, input: DriftCheckInput) -> DriftCheckResult:
        policy = await workflow.execute_activity_method(
            DriftActivities.drift_policy, DriftPolicyInput(input.site_id),
            start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY,
        )
        if not input.site_id:
            return await self._sweep(input, policy)
        workflow.upsert_search_attributes([sa.SITE.value_set(input.site_id)])
        info = workflow.info()
        report: DriftReportSummary = await workflow.execute_activity_method(
            DriftActivities.run_drift_check,
            RunDriftCheckInput(info.workflow_id, info.run_id, input.site_id, policy.window_frames, policy.min_frames,
                               policy.column_share, policy.p_value, input.requested_by, workflow.now().isoformat()),
            # Evidently on the drift queue, off the workers that move batches along.
            task_queue=policy.drift_task_queue or None,
            start_to_close_timeout=DRIFT_TIMEOUT, retry_policy=DRIFT_RETRY,
        )
        workflow.upsert_search_attributes([sa.STATUS.value_set(report.status)])
        result = DriftCheckResult(input.site_id, report.report_id, report.status)
        if report.status != DriftStatus.DRIFT:
            return result
        await self._apply_policy(input, policy, report, result)
        return result

    async def _sweep(self, input: DriftCheckInput, policy: DriftPolicy) -> DriftCheckResult:
        """The scheduled run: one child per site with recent frames, all at once; a site whose check
        fails does not stop the others."""
        sites = await workflow.execute_activity_method(
            DriftActivities.list_drift_sites, ListSitesInput(policy.active_site_hours),
            start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY,
        )
        stamp = f"{workflow.now():%Y%m%dT%H%M%S}"
        outcomes = await asyncio.gather(
            *(workflow.execute_child_workflow(DriftCheckWorkflow.run, DriftCheckInput(site, input.requested_by),
                                              id=drift_check_workflow_id(site, stamp))
              for site in sites),
            return_exceptions=True,
        )
        checked = []
        for site, outcome in zip(sites, outcomes, strict=True):
            if isinstance(outcome, DriftCheckResult):
                checked.append(outcome)
            else:
                workflow.logger.warning("drift check of site %s failed: %s", site, outcome)
                checked.append(DriftCheckResult(site, reason=f"check failed: {outcome}"))
        return DriftCheckResult("", sites=checked)

    async def _apply_policy(self, input: DriftCheckInput, policy: DriftPolicy, report: DriftReportSummary,
                            result: DriftCheckResult) -> None:
        now = workflow.now()
        readiness: Readiness = await workflow.execute_activity_method(
            DriftActivities.retraining_readiness, ReadinessInput(input.site_id, policy.params, now.isoformat()),
            start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY,
        )
        last = datetime.fromisoformat(readiness.last_retraining_at) if readiness.last_retraining_at else None
        decision, reason = decide(readiness.labels_available, policy.min_new_labels, last, now, policy.cooldown_s)
        plan = readiness.plan
        if decision == DriftDecision.RETRAIN and plan is not None:
            result.retraining_workflow_id = retraining_workflow_id(plan.snapshot_id)
            try:
                await workflow.start_child_workflow(
                    RETRAINING_WORKFLOW,
                    RetrainingInput(plan, policy.params,
                                    RetrainingTrigger("drift", "drift policy", report.report_id, reason),
                                    policy.min_improvement, policy.training_task_queue, policy.heartbeat_timeout_s,
                                    policy.training_timeout_s, policy.rollout),
                    id=result.retraining_workflow_id,
                    # The run outlives this check; a snapshot already trained on is not trained again.
                    parent_close_policy=ParentClosePolicy.ABANDON,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                )
            except WorkflowAlreadyStartedError:
                decision = DriftDecision.ALREADY_RETRAINING
                reason = f"a retraining run for snapshot {plan.snapshot_id} exists already"
        else:
            result.webhook_workflow_id = await self._notify(policy, report, decision, reason, readiness)
        result.decision, result.reason = decision, reason
        await workflow.execute_activity_method(
            DriftActivities.record_drift_decision,
            RecordDecisionInput(report.report_id, input.site_id, decision, reason, readiness.labels_available,
                                policy.min_new_labels, readiness.last_retraining_at, policy.cooldown_s,
                                now.isoformat(), plan.snapshot_id if plan else None, result.retraining_workflow_id,
                                result.webhook_workflow_id),
            start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY,
        )

    async def _notify(self, policy: DriftPolicy, report: DriftReportSummary, decision: str, reason: str,
                      readiness: Readiness) -> str | None:
        """The signed `drift.detected` webhook, delivered by its own workflow; None without a URL."""
        if not policy.webhook_url:
            return None
        payload = {
            "report_id": report.report_id, "site_id": report.site_id, "model_version": report.model_version,
            "drift_share": report.drift_share, "drifted_columns": report.drifted_columns,
            "current_frames": report.current_frames, "unfamiliar_rate": report.unfamiliar_rate_current,
            "decision": decision, "reason": reason, "labels_available": readiness.labels_available,
            "labels_required": policy.min_new_labels,
        }
        return await start_webhook_delivery(policy.webhook_url, DRIFT_EVENT, payload,
                                            delivery_id=f"{report.report_id}.drift")
