"""Search attributes that make every run findable in the Temporal UI by camera, site, model and status."""

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

CAMERA = SearchAttributeKey.for_keyword("SightlineCamera")
SITE = SearchAttributeKey.for_keyword("SightlineSite")
MODEL_VERSION = SearchAttributeKey.for_keyword("SightlineModelVersion")
STATUS = SearchAttributeKey.for_keyword("SightlineStatus")
DEFECT_COUNT = SearchAttributeKey.for_int("SightlineDefectCount")
# The batch a review task came from: its tasks are started by its classification, not as its children.
BATCH = SearchAttributeKey.for_keyword("SightlineBatch")

ALL = (CAMERA, SITE, MODEL_VERSION, STATUS, DEFECT_COUNT, BATCH)


def at_start(camera_id: str, site_id: str, status: str) -> TypedSearchAttributes:
    """What a batch or review task is found by from its start: its camera, its site, its first status.
    Given with the start itself, they cost no upsert event."""
    return TypedSearchAttributes([SearchAttributePair(CAMERA, camera_id), SearchAttributePair(SITE, site_id),
                                  SearchAttributePair(STATUS, status)])
