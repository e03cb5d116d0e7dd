"""The audit trail of the API: one append-only row per mutating call (who, what, which resource and
workflow, when). The table itself rejects UPDATE, DELETE and TRUNCATE (migration 0003)."""

from __future__ import annotations

import structlog

from infra.api_keys import Principal
from infra.audit_log import append_audit


async def record_audit(
    conn,
    principal: Principal | None,
    action: str,
    resource: str,
    workflow_id: str | None = None,
    details: dict | None = None,
    *,
    request_id: str | None = None,
) -> int:
    """Append one audit row and return its id. `conn` is a connection or a pool. The request id
    defaults to the one bound in structlog's context vars (api.request_ids binds it per request)."""
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
