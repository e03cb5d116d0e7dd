"""Failure types: the `type` of every ApplicationError our workflows, activities and update validators
raise, declared once with whether Temporal may retry it and the HTTP status the API answers with.

Workflows list the non-retryable ones in their retry policies, activities raise them, the API maps a
refusal to its status: all three read the same members, so a new failure type is added in one place.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from temporalio.exceptions import ApplicationError


class Failure(StrEnum):
    """Members are `NAME = "TypeName", http_status, retryable`; the value is the ApplicationError type."""

    http_status: int
    retryable: bool

    def __new__(cls, value: str, http_status: int = 500, retryable: bool = False) -> Failure:
        member = str.__new__(cls, value)
        member._value_ = value
        member.http_status = http_status
        member.retryable = retryable
        return member

    def error(self, message: str, *, next_retry_delay: timedelta | None = None) -> ApplicationError:
        """The ApplicationError to raise for this failure, retryable or not as declared."""
        return ApplicationError(message, type=str(self), non_retryable=not self.retryable,
                                next_retry_delay=next_retry_delay)

    @classmethod
    def of(cls, type_name: str | None) -> Failure | None:
        """The member of this class with that ApplicationError type, or None."""
        return cls._value2member_map_.get(type_name or "")  # type: ignore[return-value]


class ReviewRefusal(Failure):
    """Why a review task (or the queue in front of it) refused a reviewer's action."""

    CLAIM_HELD = "ClaimHeld", 409             # someone else holds an unexpired claim
    NOT_CLAIM_HOLDER = "NotClaimHolder", 409  # decide/release without holding the claim
    ALREADY_REVIEWED = "AlreadyReviewed", 409  # consensus: this reviewer already gave a decision
    DECIDED = "AlreadyDecided", 409           # the task is closed
    OPENING = "TaskOpening", 409              # claimed before the task loaded its policy; retry
    INVALID_LABEL = "InvalidLabel", 422       # not one of the model's classes nor 'unusable'
    INVALID_REQUEST = "InvalidRequest", 422   # e.g. a non-positive lease
    UNAVAILABLE = "TaskUnavailable", 503      # the task's workflow did not answer in time
    NOT_FOUND = "NotFound", 404
    CLAIM_LIMIT = "ClaimLimitReached", 409    # the reviewer already holds as many claims as allowed
    LEASE_TOO_LONG = "LeaseTooLong", 422      # a lease longer than the cap (review_max_lease_seconds)
    OUT_OF_SCOPE = "OutOfScope", 403          # the key is limited to other sites or cameras


class WebhookFailure(Failure):
    """Why one webhook delivery attempt failed; the retryable ones back off and try again."""

    REJECTED = "WebhookRejected", 502                   # the receiver answered 4xx: retrying cannot help
    SUBSCRIPTION_MISSING = "WebhookSubscriptionMissing", 404
    SUBSCRIPTION_DISABLED = "WebhookSubscriptionDisabled", 409
    INVALID_URL = "InvalidWebhookUrl", 422
    UNREACHABLE = "WebhookUnreachable", 502, True       # connection refused, timeout
    HTTP_ERROR = "WebhookHttpError", 502, True          # 5xx, 408, 429
    ADDRESS_REFUSED = "WebhookAddressRefused", 422      # the host resolves to a non-public address
    REDIRECTED = "WebhookRedirected", 502               # a 3xx: redirects are never followed


class ServingFailure(Failure):
    """Why a call to the inference service failed."""

    UNAVAILABLE = "ServingUnavailable", 503, True  # unreachable, overloaded, 5xx
    REJECTED = "ServingRejected", 422              # the service refused the request as bad input


class RecordFailure(Failure):
    """A write or read that can never succeed: a bug upstream, not a transient fault."""

    UNKNOWN_FRAME = "UnknownFrame", 500
    MISSING_FRAMES = "MissingFrames", 500  # a batch started without its frames recorded


class BatchFailure(Failure):
    """A batch that could not be finished; its row says why (batches.failure_reason)."""

    FAILED = "BatchFailed", 500


class DriftFailure(Failure):
    """Why a drift check cannot run; retrying will not change it."""

    NO_REFERENCE = "NoDriftReference", 409  # production's artifacts carry no drift reference


class RetrainingFailure(Failure):
    """Why a retraining run cannot go on; retrying will not change it."""

    SNAPSHOT_MISMATCH = "SnapshotMismatch", 409  # the saved plan does not hash to the snapshot id it is under
    SNAPSHOT_INVALID = "SnapshotInvalid", 422    # a frame is missing or its bytes changed
    PARENT_INVALID = "ParentInvalid", 409        # the version to fine-tune cannot be loaded (integrity, signature)
    INVALID_PARAMETERS = "InvalidTrainingParameters", 422


def non_retryable(*kinds: type[Failure]) -> list[str]:
    """The ApplicationError types a retry policy must not retry, for `non_retryable_error_types`."""
    return [str(member) for kind in kinds for member in kind if not member.retryable]


class RolloutRefusal(Failure):
    """Why a rollout (or an action on one) was refused; the API answers with the status."""

    NOT_RUNNING = "RolloutNotRunning", 409        # finished: promoted, rolled back or aborted
    ALREADY_PAUSED = "RolloutAlreadyPaused", 409
    NOT_PAUSED = "RolloutNotPaused", 409
    APPROVAL_NOT_REQUIRED = "RolloutApprovalNotRequired", 409
    FORBIDDEN = "RolloutActionForbidden", 403      # the caller's role may not do this
    UNKNOWN_VERSION = "RolloutUnknownVersion", 404  # the candidate is not a registered version
    SAME_AS_PRODUCTION = "RolloutSameAsProduction", 409
    ALREADY_RUNNING = "RolloutAlreadyRunning", 409  # a rollout of this candidate is running
    LINE_BUSY = "RolloutLineBusy", 409  # another rollout holds the model line: one at a time
    INVALID = "InvalidRollout", 422
    NOT_FOUND = "RolloutNotFound", 404
