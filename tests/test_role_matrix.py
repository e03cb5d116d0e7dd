"""Every route declares who may call it; this walks the whole matrix: every route, every role, no key."""

from __future__ import annotations

import pytest

from infra.tables.api_keys import ROLES

ALL = set(ROLES)
PUBLIC = "public"
# (method, path) -> the roles that may call it (admin always may), or PUBLIC.
MATRIX: dict[tuple[str, str], set[str] | str] = {
    ("GET", "/healthz"): PUBLIC,
    # Prometheus scrapes with an ops key.
    ("GET", "/metrics"): {"ops", "admin"},
    ("POST", "/v1/batches"): {"ingest", "admin"},
    ("PUT", "/v1/uploads/{name}"): {"ingest", "admin"},
    ("GET", "/v1/batches"): {"ingest", "ml-engineer", "ops", "admin"},
    ("GET", "/v1/batches/{batch_id}"): {"ingest", "ml-engineer", "ops", "admin"},
    ("GET", "/v1/batches/{batch_id}/predictions"): {"ingest", "ml-engineer", "ops", "admin"},
    ("GET", "/v1/frames/{frame_id}"): {"ingest", "reviewer", "ml-engineer", "ops", "admin"},
    # Authorised by the URL's own signature and expiry, like a presigned S3 URL.
    ("GET", "/v1/frames/{frame_id}/image"): PUBLIC,
    ("POST", "/v1/cameras/{camera_id}/frames"): {"ingest", "admin"},
    ("GET", "/v1/cameras"): {"ingest", "ml-engineer", "ops", "admin"},
    # Camera health: read with the cameras; recalibrated by ops (maintenance), audited.
    ("GET", "/v1/cameras/{camera_id}/health"): {"ingest", "ml-engineer", "ops", "admin"},
    ("POST", "/v1/cameras/{camera_id}/health/recalibrate"): {"ops", "admin"},
    ("GET", "/v1/reviews"): {"reviewer", "ml-engineer", "admin"},
    ("GET", "/v1/reviews/metrics"): {"reviewer", "ml-engineer", "ops", "admin"},
    ("GET", "/v1/reviews/{task_id}"): {"reviewer", "ml-engineer", "admin"},
    ("POST", "/v1/reviews/{task_id}/claim"): {"reviewer", "ml-engineer", "admin"},
    ("POST", "/v1/reviews/{task_id}/decision"): {"reviewer", "ml-engineer", "admin"},
    ("POST", "/v1/reviews/{task_id}/release"): {"reviewer", "ml-engineer", "admin"},
    ("POST", "/v1/reviews/next"): {"reviewer", "ml-engineer", "admin"},
    ("GET", "/v1/reviews/{task_id}/frame"): {"reviewer", "ml-engineer", "admin"},
    # The loop: drift checks and reports for ML engineers and ops; retraining triggered and cancelled by
    # ML engineers, followed by ops too; model versions and their cards for both.
    ("POST", "/v1/drift-checks"): {"ml-engineer", "ops", "admin"},
    ("GET", "/v1/drift-reports"): {"ml-engineer", "ops", "admin"},
    ("GET", "/v1/drift-reports/{report_id}"): {"ml-engineer", "ops", "admin"},
    ("GET", "/v1/drift-reports/{report_id}/html"): {"ml-engineer", "ops", "admin"},
    ("POST", "/v1/retraining"): {"ml-engineer", "admin"},
    ("GET", "/v1/retraining"): {"ml-engineer", "ops", "admin"},
    ("GET", "/v1/retraining/{workflow_id}"): {"ml-engineer", "ops", "admin"},
    ("POST", "/v1/retraining/{workflow_id}/cancel"): {"ml-engineer", "admin"},
    ("GET", "/v1/models"): {"ml-engineer", "ops", "admin"},
    ("GET", "/v1/models/{version}"): {"ml-engineer", "ops", "admin"},
    ("GET", "/v1/models/{ref}/artifacts/{name}"): {"ingest", "ml-engineer", "admin"},
    # Rollouts: ML engineers start, approve and resume; ops may also pause, abort and roll back.
    ("POST", "/v1/rollouts"): {"ml-engineer", "admin"},
    ("GET", "/v1/rollouts"): {"ml-engineer", "ops", "admin"},
    ("GET", "/v1/rollouts/{rollout_id}"): {"ml-engineer", "ops", "admin"},
    ("POST", "/v1/rollouts/{rollout_id}/approve"): {"ml-engineer", "admin"},
    ("POST", "/v1/rollouts/{rollout_id}/resume"): {"ml-engineer", "admin"},
    ("POST", "/v1/rollouts/{rollout_id}/pause"): {"ml-engineer", "ops", "admin"},
    ("POST", "/v1/rollouts/{rollout_id}/abort"): {"ml-engineer", "ops", "admin"},
    ("POST", "/v1/rollouts/{rollout_id}/rollback"): {"ml-engineer", "ops", "admin"},
    # Deletion requests and retention periods: admin only; retiring a model (ends its retention hold): ML engineers.
    ("POST", "/v1/deletions"): {"admin"},
    ("GET", "/v1/deletions/{deletion_id}"): {"admin"},
    ("GET", "/v1/sites/{site_id}/retention"): {"admin"},
    ("PUT", "/v1/sites/{site_id}/retention"): {"admin"},
    ("POST", "/v1/models/{version}/retire"): {"ml-engineer", "admin"},
    # Privacy settings: ops change them; ingest keys read them too (the edge agent redacts with them).
    ("GET", "/v1/sites/{site_id}/privacy"): {"ingest", "ops", "admin"},
    ("PUT", "/v1/sites/{site_id}/privacy"): {"ops", "admin"},
    ("GET", "/v1/sites/{site_id}/cameras/{camera_id}/privacy"): {"ingest", "ops", "admin"},
    ("PUT", "/v1/sites/{site_id}/cameras/{camera_id}/privacy"): {"ops", "admin"},
    # Dataset exchange: COCO / YOLO export of a snapshot, COCO import as reviewed labels (audited).
    ("GET", "/v1/datasets/{snapshot_id}/export"): {"ml-engineer", "admin"},
    ("POST", "/v1/datasets/import"): {"ml-engineer", "admin"},
}
# The matrix checks who may call, not what a call does: "next" gets a scope that matches no task, so
# it never claims a task that another test left behind (whose workers are gone).
PARAMS = {("POST", "/v1/reviews/next"): {"batch_id": "role-matrix-matches-nothing"}}
# The reviewer web page signs in with a key and keeps it in a cookie session; its routes are
# checked by tests/test_review_page.py, not by header keys.
PAGE_PREFIXES = ("/review", "/static")


def app_routes(app) -> list[tuple[str, str]]:
    """Every operation in the OpenAPI schema: what the app really serves, whatever routers hold it."""
    return [(method.upper(), path) for path, operations in app.openapi()["paths"].items() for method in operations
            if not path.startswith(PAGE_PREFIXES)]


async def test_every_route_is_in_the_matrix(api):
    served = app_routes(api.app)
    missing = [r for r in served if r not in MATRIX]
    assert not missing, f"routes without a declared role set in the matrix: {missing}"
    stale = [r for r in MATRIX if r not in served]
    assert not stale, f"matrix rows for routes that no longer exist: {stale}"


@pytest.mark.parametrize("role", [*ROLES, None])
async def test_role_matrix(api, role):
    headers = api.auth(role) if role else {"Authorization": ""}
    failures = []
    for method, path in app_routes(api.app):
        allowed = MATRIX[(method, path)]
        url = path.replace("{", "").replace("}", "")  # e.g. /v1/batches/batch_id: a real-looking id
        response = await api.http.request(method, url, headers=headers, json={} if method == "POST" else None,
                                          params=PARAMS.get((method, path)))
        if allowed == PUBLIC:
            if response.status_code in (401, 403) and not path.endswith("/image"):
                failures.append(f"{method} {path}: public, got {response.status_code}")
            continue
        if role is None:
            expected = {401}
        elif role in allowed or role == "admin":
            if response.status_code in (401, 403):
                failures.append(f"{method} {path} as {role}: allowed, got {response.status_code} {response.text}")
            continue
        else:
            expected = {403}
        if response.status_code not in expected:
            failures.append(f"{method} {path} as {role}: expected {expected}, got {response.status_code}")
    assert not failures, "\n".join(failures)


async def test_signed_image_url_refuses_a_forged_signature(api):
    response = await api.http.get("/v1/frames/x/image", params={"expires": 9999999999, "signature": "forged"})
    assert response.status_code == 403 and "signature" in response.json()["detail"]


async def test_a_signature_that_is_not_ascii_is_a_bad_request(api):
    for signature in ("é" * 64, "sig\u2028nature", "😀"):
        response = await api.http.get("/v1/frames/x/image", params={"expires": 9999999999, "signature": signature})
        assert response.status_code == 400 and "malformed" in response.json()["detail"], signature
