"""The audit trail: one row in ``audit_log`` per data action (publish, update, skip, takedown request,
each takedown stage, cancel, export, restore), written through :func:`record_audit` only."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, text

#: Outcomes of an audited action.
OK, SKIPPED, FAILED = "ok", "skipped", "failed"

_INSERT = text(
    """
    INSERT INTO audit_log (actor, action, object_type, object_id, target, outcome, details)
    VALUES (:actor, :action, :object_type, :object_id, :target, :outcome, CAST(:details AS jsonb))
    RETURNING id
    """
)


def record_audit(
    conn: Connection,
    actor: str,
    action: str,
    object_type: str,
    object_id: str | int | None,
    target: str | None = None,
    outcome: str = OK,
    details: dict[str, Any] | None = None,
) -> int:
    """Write one audit row in the caller's transaction (so the row commits with the action it records)
    and return its id. ``details`` must hold no secrets."""
    return conn.execute(
        _INSERT,
        {
            "actor": actor,
            "action": action,
            "object_type": object_type,
            "object_id": None if object_id is None else str(object_id),
            "target": target,
            "outcome": outcome,
            "details": json.dumps(details or {}, default=str, ensure_ascii=False),
        },
    ).scalar_one()
