"""The orchestration workflows as workers under Temporal's Worker Versioning register them: the same
workflow types, each declared with its versioning behaviour.

The rule (README, "Changing a workflow"): a short-lived workflow (a frame batch, a webhook delivery, a
review task, a sweep, a drift check) is PINNED: a run stays on the build that started it, so its code may
change freely in the next build, and the old build's workers run until its runs have drained. A
long-lived workflow (a camera stream, a rollout, a retraining run) is AUTO_UPGRADE: its runs move to the
new build and every change to its steps stays behind `workflow.patched()`.

Declared here, apart from the classes themselves, because Temporal refuses a versioning behaviour from
a worker that is not versioned (the tests' workers and the time-skipping server): those register the
plain classes. Each subclass keeps its type's name, so either kind of worker runs the same histories.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import VersioningBehavior

from workflows.alert_delivery import WebhookDeliveryWorkflow
from workflows.alert_types import DeliveryResult, WebhookDeliveryInput
from workflows.batch_sweep import StaleBatchSweepWorkflow
from workflows.batch_sweep_types import BatchSweepInput, BatchSweepResult
from workflows.batch_types import FrameBatchInput, FrameBatchResult
from workflows.camera_stream import CameraStreamWorkflow
from workflows.camera_stream_types import CameraStreamInput, CameraStreamResult
from workflows.deletion import DeletionWorkflow
from workflows.deletion_types import DeletionInput, DeletionProgress, RetentionInput, RetentionResult
from workflows.drift_check import DriftCheckWorkflow
from workflows.drift_types import DriftCheckInput, DriftCheckResult
from workflows.frame_batch import FrameBatchWorkflow
from workflows.retention import RetentionWorkflow
from workflows.retraining import RetrainingWorkflow
from workflows.retraining_types import RetrainingInput, RetrainingResult
from workflows.review_task import ReviewTaskWorkflow
from workflows.review_types import ReviewTaskInput, ReviewTaskResult
from workflows.rollout import ModelRolloutWorkflow
from workflows.rollout_types import RolloutInput, RolloutState

PINNED = VersioningBehavior.PINNED
AUTO_UPGRADE = VersioningBehavior.AUTO_UPGRADE


def _name(cls: type) -> str:
    name = workflow._Definition.must_from_class(cls).name
    assert name is not None  # none of ours is dynamic
    return name


# Each subclass runs its base's run (the SDK wants @workflow.run on the class it registers); signals,
# queries, updates and @workflow.init are inherited as they are.

@workflow.defn(name=_name(FrameBatchWorkflow), versioning_behavior=PINNED)
class PinnedFrameBatchWorkflow(FrameBatchWorkflow):
    @workflow.run
    async def run(self, input: FrameBatchInput) -> FrameBatchResult:
        return await super().run(input)


@workflow.defn(name=_name(WebhookDeliveryWorkflow), versioning_behavior=PINNED)
class PinnedWebhookDeliveryWorkflow(WebhookDeliveryWorkflow):
    @workflow.run
    async def run(self, input: WebhookDeliveryInput) -> DeliveryResult:
        return await super().run(input)


@workflow.defn(name=_name(ReviewTaskWorkflow), versioning_behavior=PINNED)
class PinnedReviewTaskWorkflow(ReviewTaskWorkflow):
    @workflow.run
    async def run(self, input: ReviewTaskInput) -> ReviewTaskResult:
        return await super().run(input)


@workflow.defn(name=_name(StaleBatchSweepWorkflow), versioning_behavior=PINNED)
class PinnedStaleBatchSweepWorkflow(StaleBatchSweepWorkflow):
    @workflow.run
    async def run(self, input: BatchSweepInput) -> BatchSweepResult:
        return await super().run(input)


@workflow.defn(name=_name(DriftCheckWorkflow), versioning_behavior=PINNED)
class PinnedDriftCheckWorkflow(DriftCheckWorkflow):
    @workflow.run
    async def run(self, input: DriftCheckInput) -> DriftCheckResult:
        return await super().run(input)


# A deletion and a retention pass run minutes, and continue as new in chunks: each run stays on its build.
@workflow.defn(name=_name(DeletionWorkflow), versioning_behavior=PINNED)
class PinnedDeletionWorkflow(DeletionWorkflow):
    @workflow.run
    async def run(self, input: DeletionInput) -> DeletionProgress:
        return await super().run(input)


@workflow.defn(name=_name(RetentionWorkflow), versioning_behavior=PINNED)
class PinnedRetentionWorkflow(RetentionWorkflow):
    @workflow.run
    async def run(self, input: RetentionInput) -> RetentionResult:
        return await super().run(input)


@workflow.defn(name=_name(CameraStreamWorkflow), versioning_behavior=AUTO_UPGRADE)
class UpgradingCameraStreamWorkflow(CameraStreamWorkflow):
    @workflow.run
    async def run(self, input: CameraStreamInput) -> CameraStreamResult:
        return await super().run(input)


@workflow.defn(name=_name(ModelRolloutWorkflow), versioning_behavior=AUTO_UPGRADE)
class UpgradingModelRolloutWorkflow(ModelRolloutWorkflow):
    @workflow.run
    async def run(self, input: RolloutInput) -> RolloutState:
        return await super().run(input)


@workflow.defn(name=_name(RetrainingWorkflow), versioning_behavior=AUTO_UPGRADE)
class UpgradingRetrainingWorkflow(RetrainingWorkflow):
    @workflow.run
    async def run(self, input: RetrainingInput) -> RetrainingResult:
        return await super().run(input)


# The plain class -> its declaration with a versioning behaviour.
VERSIONED: dict[type, type] = {
    FrameBatchWorkflow: PinnedFrameBatchWorkflow,
    WebhookDeliveryWorkflow: PinnedWebhookDeliveryWorkflow,
    ReviewTaskWorkflow: PinnedReviewTaskWorkflow,
    StaleBatchSweepWorkflow: PinnedStaleBatchSweepWorkflow,
    DriftCheckWorkflow: PinnedDriftCheckWorkflow,
    DeletionWorkflow: PinnedDeletionWorkflow,
    RetentionWorkflow: PinnedRetentionWorkflow,
    CameraStreamWorkflow: UpgradingCameraStreamWorkflow,
    ModelRolloutWorkflow: UpgradingModelRolloutWorkflow,
    RetrainingWorkflow: UpgradingRetrainingWorkflow,
}
