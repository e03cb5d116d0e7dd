"""Camera health for the API: each camera's state within the caller's sites and cameras, a camera's
history, and an operator's recalibration (audited). Judging cameras is the classification activity's
(activities.camera_health); the API only reads it, and resets a camera's calibration on request."""

from __future__ import annotations

from api.audit import record_audit
from api.schemas.camera_health import CameraHealth, CameraHealthDetail, CameraHealthEvent, MetricRange
from infra.db import DbPool, Row
from infra.settings import Settings
from infra.tables import camera_health
from infra.tables.api_keys import Principal
from infra.tables.batches import Scope
from vision.camera_health import CALIBRATING, METRICS, Moments, bands


class CameraNotFound(LookupError):
    pass


def scope_of(caller: Principal) -> Scope:
    return Scope(tuple(caller.site_ids), tuple(caller.camera_ids))


def health_view(row: Row, tolerance: float) -> CameraHealth:
    calibration = {metric: Moments.from_dict(m) for metric, m in (row["calibration"] or {}).items()}
    recent = row["recent"] or {}
    calibrated = bands(calibration, tolerance) if row["calibrated_at"] is not None else {}
    return CameraHealth(
        state=row["state"], reasons=list(row["reasons"]), since=row["since"], calibrated_at=row["calibrated_at"],
        calibration_frames=min((calibration[m].n if m in calibration else 0 for m in METRICS), default=0),
        calibration_target=row["calibration_target"], repeated_frames=row["repeated_frames"],
        evaluated_at=row["evaluated_at"],
        ranges={m: MetricRange(low=round(b.low, 4), high=round(b.high, 4),
                               recent=None if recent.get(m) is None else round(float(recent[m]), 4))
                for m, b in calibrated.items()},
    )


class CameraHealthService:
    def __init__(self, pool: DbPool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings

    async def of_cameras(self, caller: Principal, site_id: str | None,
                         state: str | None = None) -> dict[tuple[str, str], tuple[Row, CameraHealth]]:
        """(site, camera) -> (row, health) of every camera the caller may see, optionally in one state."""
        async with self.pool.connection() as conn:
            found = await camera_health.listed(conn, site_id, scope_of(caller), state)
        tolerance = self.settings.camera_health_tolerance
        return {(r["site_id"], r["camera_id"]): (r, health_view(r, tolerance)) for r in found}

    async def detail(self, caller: Principal, site_id: str, camera_id: str) -> CameraHealthDetail:
        # Another site's camera (or one outside a scoped key's cameras) is not found, like any id.
        if not caller.allows(site_id, camera_id):
            raise CameraNotFound(f"no health record for camera {camera_id!r} of site {site_id!r}")
        async with self.pool.connection() as conn:
            row = await camera_health.get(conn, site_id, camera_id)
            if row is None:
                raise CameraNotFound(f"no health record for camera {camera_id!r} of site {site_id!r}")
            history = await camera_health.events(conn, site_id, camera_id)
        return CameraHealthDetail(camera_id=camera_id, site_id=site_id,
                                  health=health_view(row, self.settings.camera_health_tolerance),
                                  events=[CameraHealthEvent(**{k: e[k] for k in CameraHealthEvent.model_fields})
                                          for e in history])

    async def recalibrate(self, caller: Principal, site_id: str, camera_id: str, reason: str) -> CameraHealthDetail:
        """Calibrate the camera again on its next frames (after a lens was cleaned, a light replaced, or
        the camera moved on purpose). Recorded as an event and audited in one transaction; a second call
        starts the calibration over, which is what it asks for."""
        if not caller.allows(site_id, camera_id):
            raise CameraNotFound(f"no health record for camera {camera_id!r} of site {site_id!r}")
        target = self.settings.camera_health_calibration_frames
        async with self.pool.connection() as conn, conn.transaction():
            row = await camera_health.recalibrate(conn, site_id, camera_id, target)
            if row is None:
                raise CameraNotFound(f"no health record for camera {camera_id!r} of site {site_id!r}")
            actor = f"{caller.name} ({caller.key_id})"
            await camera_health.record_event(conn, camera_health.NewEvent(
                site_id, camera_id, row["transitions"], row["previous_state"], CALIBRATING, [], None,
                {"reason": reason, "calibration_target": target}, actor=actor))
            await record_audit(conn, caller, "camera.recalibrate", f"cameras/{site_id}/{camera_id}",
                               details={"site_id": site_id, "camera_id": camera_id, "reason": reason,
                                        "previous_state": row["previous_state"], "seq": row["transitions"]})
        return await self.detail(caller, site_id, camera_id)
