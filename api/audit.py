"""The audit trail of the API: one append-only row per mutating call (who, what, which resource and
workflow, when). The table itself rejects UPDATE, DELETE and TRUNCATE (migration 0003)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from infra.db import DbConnection
from infra.tables.api_keys import Principal
from infra.tables.audit_log import append_audit


async def record_audit(
    conn: DbConnection,
    principal: Principal | None,
    action: str,
    resource: str,
    workflow_id: str | None = None,
    details: Mapping[str, Any] | None = None,
    *,
    request_id: str | None = None,
) -> int:
    """Append one audit row and return its id. The request id defaults to the one bound in structlog's
    context vars (api.request_ids binds it per request)."""
    if request_id is None:
        request_id = structlog.contextvars.get_contextvars().get("request_id")
    return await append_audit(
        conn,
        key_id=principal.key_id if principal else None,
        key_name=principal.name if principal else None,
        role=principal.role if principal else None,
        action=action,
        resource=resource,
        workflow_id=workflow_id,
        details=details,
        request_id=request_id,
    )
