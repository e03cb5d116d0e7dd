"""Search attributes that make every run findable in the Temporal UI by camera, site, model and status."""

from temporalio.common import SearchAttributeKey

CAMERA = SearchAttributeKey.for_keyword("SightlineCamera")
SITE = SearchAttributeKey.for_keyword("SightlineSite")
MODEL_VERSION = SearchAttributeKey.for_keyword("SightlineModelVersion")
STATUS = SearchAttributeKey.for_keyword("SightlineStatus")
DEFECT_COUNT = SearchAttributeKey.for_int("SightlineDefectCount")

ALL = (CAMERA, SITE, MODEL_VERSION, STATUS, DEFECT_COUNT)
