"""Privacy settings of a site (its default) or of one camera: regions to blur or fill, faces on or off."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from vision.redaction import MAX_POLYGON_POINTS, MAX_REGIONS, MIN_POLYGON_POINTS

Relative = Annotated[float, Field(ge=0.0, le=1.0, description="a fraction of the frame's width or height, 0..1")]


class PrivacyRegion(BaseModel):
    """An area of every frame, in relative coordinates: `rect` [x0, y0, x1, y1] or a `polygon` of points."""

    model_config = {"extra": "forbid"}

    mode: Literal["blur", "fill"] = Field(description="blur: irreversibly smoothed; fill: painted black")
    rect: tuple[Relative, Relative, Relative, Relative] | None = Field(
        None, description="[x0, y0, x1, y1], x0 < x1 and y0 < y1", examples=[[0.0, 0.0, 0.25, 0.2]])
    polygon: list[tuple[Relative, Relative]] | None = Field(
        None, min_length=MIN_POLYGON_POINTS, max_length=MAX_POLYGON_POINTS, description="[[x, y], ...]",
        examples=[[[0.5, 0.5], [0.9, 0.5], [0.7, 0.9]]])

    @model_validator(mode="after")
    def _one_shape(self) -> PrivacyRegion:
        if (self.rect is None) == (self.polygon is None):
            raise ValueError("a region has exactly one of `rect` and `polygon`")
        if self.rect is not None:
            x0, y0, x1, y1 = self.rect
            if not (x0 < x1 and y0 < y1):
                raise ValueError(f"rect {list(self.rect)} needs x0 < x1 and y0 < y1")
        return self

    def as_json(self) -> dict[str, Any]:
        shape: dict[str, Any] = ({"rect": list(self.rect)} if self.rect is not None
                                 else {"polygon": [list(p) for p in self.polygon or []]})
        return {"mode": self.mode, **shape}


class PrivacySettingsRequest(BaseModel):
    model_config = {"extra": "forbid"}

    faces: bool = Field(False, description="blur faces (OpenCV's Haar cascade, offline)")
    regions: list[PrivacyRegion] = Field([], max_length=MAX_REGIONS)
    # No NUL: Postgres text cannot hold one (a 422 here, not a 500 from the insert).
    reason: str = Field("", max_length=500, pattern=r"^[^\x00]*$", description="why, for the audit log and the "
                        "revision")


class PrivacyRevision(BaseModel):
    revision: int
    site_id: str
    camera_id: str | None = Field(description="null: the site's default")
    faces: bool
    regions: list[dict[str, Any]]
    changed_by: str
    reason: str
    created_at: datetime


class PrivacySettings(BaseModel):
    site_id: str
    camera_id: str | None = None
    settings: PrivacyRevision | None = Field(description="this site's default or this camera's own latest revision")
    in_force: PrivacyRevision | None = Field(description="what applies to the camera: its own revision, else the "
                                             "site's default; null: frames are stored as received")
    redacting: bool = Field(description="whether frames are redacted before they are stored")
    created: bool | None = Field(None, description="on PUT: whether a new revision was made (false: it said this "
                                 "already)")
