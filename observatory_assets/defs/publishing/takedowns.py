"""Takedowns: a request withdraws items at once (stage 1) and deletes what only they carried after a
grace period (stage 2), unless it is cancelled first.

- **Request** (:func:`request_takedown`): an item, every item with a URL, or every item of an event is
  recorded in ``takedown_items``; from then on those items are left out of digests, feeds and exports
  (``lib/takedowns.py``). The stage-2 deadline (``grace_until``) is persisted with the request.
- **Stage 1** (pending → withdrawn): the :data:`WITHDRAWAL_STEPS` run in order. The first claims
  every publish record showing one of the items (``takedown_records``, record → ``takedown_pending``),
  then re-publishes each: Ghost posts are re-rendered without the items or set to draft with an empty
  body when nothing is left, and the static pages, index and feeds are rebuilt.
- **Stage 2** (withdrawn → removed, once ``grace_until`` has passed): content left empty is deleted from
  its target (a 404 counts as done) and its record becomes ``removed``; the other records become
  ``active`` again. It runs with the request row locked, so a cancel cannot interleave.
- **Cancel** (pending or withdrawn → cancelled): the items are back at once; the restore pass
  re-publishes the records stage 1 changed. Nothing is deleted later: stage 2 only takes ``withdrawn``.

Every step is idempotent; a failure records ``attempts``/``last_error`` on the request (it stays in its
stage and is retried with backoff) and is raised to the caller, so the Dagster run fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from observatory_assets.defs.ingestion.urls import normalize_url
from observatory_assets.defs.publishing.publisher import delete_record, publish_day
from observatory_assets.defs.publishing.targets import Target
from observatory_assets.defs.trends.evidence import retract_withdrawn
from observatory_assets.lib.audit import FAILED, record_audit
from observatory_assets.lib.errors import failure_message
from observatory_assets.lib.outbox import TAKEDOWN_COMPLETED, emit
from observatory_assets.lib.statuses import PublishRecordStatus, TakedownStatus
from resources.object_store import ObjectStore

DEFAULT_GRACE = timedelta(hours=72)
SUBJECT_KINDS = ("item", "url", "event")
#: Retry backoff after a failed attempt: 5 s, 10 s, 20 s… at most 15 minutes.
RETRY_BASE_SECONDS, RETRY_MAX_SECONDS = 5, 900

#: The statuses this module's SQL names, bound as parameters (unused ones are ignored by a statement).
_STATUSES = {
    "record_active": PublishRecordStatus.ACTIVE,
    "record_pending": PublishRecordStatus.TAKEDOWN_PENDING,
    "record_removed": PublishRecordStatus.REMOVED,
    "request_pending": TakedownStatus.PENDING,
    "request_withdrawn": TakedownStatus.WITHDRAWN,
    "request_removed": TakedownStatus.REMOVED,
    "request_cancelled": TakedownStatus.CANCELLED,
}

_RESOLVE = {
    "item": "SELECT item_id FROM item_keys WHERE item_id = CAST(:subject AS bigint)",
    # raw_items.url holds canonical URLs (ingestion), looked up through raw_items_url (a hash index per partition)
    "url": "SELECT DISTINCT id FROM raw_items WHERE url = :subject",
    "event": "SELECT item_id FROM event_items WHERE event_id = CAST(:subject AS bigint)",
}


class TakedownError(RuntimeError):
    """A takedown stage failed on a target; the request stays in its stage and is retried."""


@dataclass
class TakedownContext:
    """What a withdrawal step works with."""

    engine: Engine
    store: ObjectStore
    targets: Mapping[str, Target]
    request_id: int
    actor: str


def _target(ctx_targets: Mapping[str, Target], kind: str) -> Target:
    if kind not in ctx_targets:
        raise TakedownError(f"publish target {kind!r} holds a record but is not configured here")
    return ctx_targets[kind]


def withdraw_from_publications(ctx: TakedownContext) -> dict:
    """Claim every record that shows a withdrawn item and re-publish it without the item."""
    with ctx.engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO takedown_records (request_id, record_id)
                SELECT DISTINCT ti.request_id, pri.record_id
                  FROM takedown_items ti
                  JOIN publish_record_items pri ON pri.item_id = ti.item_id
                  JOIN publish_records pr ON pr.id = pri.record_id
                 WHERE ti.request_id = :rid AND pr.status <> :record_removed
                ON CONFLICT DO NOTHING
                """
            ),
            {"rid": ctx.request_id, **_STATUSES},
        )
        records = conn.execute(
            text(
                "UPDATE publish_records pr SET status = :record_pending FROM takedown_records tr "
                "WHERE tr.request_id = :rid AND tr.record_id = pr.id AND pr.status <> :record_removed "
                "RETURNING pr.id, pr.target, pr.digest_date"
            ),
            {"rid": ctx.request_id, **_STATUSES},
        ).all()
    emptied = 0
    for record in sorted(records, key=lambda r: (r.target, r.digest_date)):
        outcome = publish_day(
            ctx.engine, ctx.store, _target(ctx.targets, record.target), record.digest_date, ctx.actor,
            reason=f"takedown {ctx.request_id} stage 1",
        )  # fmt: skip
        emptied += not outcome.live
        with ctx.engine.begin() as conn:
            conn.execute(
                text("UPDATE takedown_records SET emptied = :emptied WHERE request_id = :rid AND record_id = :id"),
                {"emptied": not outcome.live, "rid": ctx.request_id, "id": record.id},
            )
    return {"records": len(records), "emptied": emptied}


def restate_trend_evidence(ctx: TakedownContext) -> dict:
    """Trend evidence built on withdrawn items is retracted (after a cancel: restored) and the days of
    every affected trend are restated, keeping the values first written beside the new ones."""
    result = retract_withdrawn(ctx.engine)
    return {
        "retracted": result.retracted,
        "recomputed": result.updated,
        "restored": result.added,
        "trends_affected": len(result.affected),
        "days_restated": len(result.restated),
    }


#: Stage 1, in order. Exports need no step (they exclude withdrawn items when they run).
WITHDRAWAL_STEPS: tuple[Callable[[TakedownContext], dict], ...] = (withdraw_from_publications, restate_trend_evidence)


def request_takedown(
    engine: Engine, kind: str, subject: str, reason: str, requested_by: str, grace: timedelta = DEFAULT_GRACE
) -> int:
    """Record a pending takedown of an item, a URL or an event; its items are withdrawn from now on."""
    if kind not in SUBJECT_KINDS:
        raise ValueError(f"takedown subject must be one of {SUBJECT_KINDS}, not {kind!r}")
    if kind in ("item", "event") and not subject.isdigit():
        raise ValueError(f"--{kind} takes a numeric id, not {subject!r}")
    if not reason.strip() or not requested_by.strip():
        raise ValueError("a takedown needs a reason and the name of who requested it")
    if kind == "url":
        canonical = normalize_url(subject)
        if canonical is None:
            raise ValueError(f"--url takes an http(s) URL, not {subject!r}")
        subject = canonical
    with engine.begin() as conn:
        items = conn.execute(text(_RESOLVE[kind]), {"subject": subject}).scalars().all()
        if not items:
            raise ValueError(f"no item matches {kind} {subject!r}")
        request_id = conn.execute(
            text(
                """
                INSERT INTO takedown_requests (item_id, requested_by, reason, subject_kind, subject, grace_until)
                VALUES (:item, :by, :reason, :kind, :subject, now() + make_interval(secs => :grace))
                RETURNING id
                """
            ),
            {"item": min(items), "by": requested_by, "reason": reason, "kind": kind, "subject": subject,
             "grace": grace.total_seconds()},
        ).scalar_one()  # fmt: skip
        conn.execute(
            text("INSERT INTO takedown_items (request_id, item_id) SELECT :rid, unnest(CAST(:items AS bigint[]))"),
            {"rid": request_id, "items": sorted(items)},
        )
        record_audit(
            conn, requested_by, "takedown_request", "takedown_request", request_id,
            details={"subject_kind": kind, "subject": subject, "items": len(items), "reason": reason,
                     "grace_seconds": grace.total_seconds()},
        )  # fmt: skip
    return request_id


def cancel_takedown(engine: Engine, request_id: int, cancelled_by: str) -> None:
    """Cancel a request that is not removed yet: its items are back at once (trend evidence included),
    nothing is deleted later, and the next takedown pass re-publishes what stage 1 changed."""
    with engine.begin() as conn:
        status = conn.execute(
            text("SELECT status FROM takedown_requests WHERE id = :id FOR UPDATE"), {"id": request_id}
        ).scalar_one_or_none()
        if status is None:
            raise ValueError(f"no takedown request {request_id}")
        if status not in (TakedownStatus.PENDING, TakedownStatus.WITHDRAWN):
            raise ValueError(
                f"takedown request {request_id} is {status}; only pending or withdrawn ones can be cancelled"
            )
        conn.execute(
            text("UPDATE takedown_requests SET status = :request_cancelled, cancelled_at = now(), cancelled_by = :by, "
                 "resolved_at = now() WHERE id = :id"),
            {"id": request_id, "by": cancelled_by, **_STATUSES},
        )  # fmt: skip
        record_audit(conn, cancelled_by, "takedown_cancel", "takedown_request", request_id, details={"was": status})
    retract_withdrawn(engine)  # the trends built on the items count again, and their days are restated


_DUE = f"""
SELECT id, status, attempts FROM takedown_requests tr
 WHERE (status = :request_pending
        OR (status = :request_withdrawn AND grace_until <= :now)
        OR (status = :request_cancelled AND EXISTS (SELECT 1 FROM takedown_records r
                                              WHERE r.request_id = tr.id AND r.restored_at IS NULL)))
   AND (:force OR last_attempt_at IS NULL
        OR last_attempt_at + make_interval(secs => least({RETRY_MAX_SECONDS}, {RETRY_BASE_SECONDS} * power(2, attempts)))
           <= :now)
 ORDER BY id
"""


def due_takedowns(engine: Engine, now: datetime | None = None, force: bool = False) -> list[tuple[int, str, int]]:
    """(request id, status, attempts) of every request with a stage due now (failed ones after backoff)."""
    with engine.connect() as conn:
        rows = conn.execute(text(_DUE), {"now": now or datetime.now(UTC), "force": force, **_STATUSES}).all()
    return [(r.id, r.status, r.attempts) for r in rows]


@dataclass
class TakedownRun:
    """What one takedown pass did."""

    withdrawn: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    restored: list[int] = field(default_factory=list)
    failures: dict[int, str] = field(default_factory=dict)
    steps: dict[int, dict] = field(default_factory=dict)


def _stage1(ctx: TakedownContext) -> dict:
    results = {step.__name__: step(ctx) for step in WITHDRAWAL_STEPS}
    with ctx.engine.begin() as conn:
        changed = conn.execute(
            text("UPDATE takedown_requests SET status = :request_withdrawn, withdrawn_at = now(), last_error = NULL "
                 "WHERE id = :id AND status = :request_pending"),
            {"id": ctx.request_id, **_STATUSES},
        ).rowcount  # fmt: skip
        if changed:
            record_audit(conn, ctx.actor, "takedown_stage1", "takedown_request", ctx.request_id, details=results)
    return results


def _open_claims_elsewhere(request_id: int) -> str:
    return f"""EXISTS (SELECT 1 FROM takedown_records o JOIN takedown_requests q ON q.id = o.request_id
                        WHERE o.record_id = pr.id AND o.request_id <> {int(request_id)}
                          AND q.status IN (:request_pending, :request_withdrawn))"""


def _stage2(ctx: TakedownContext, now: datetime) -> dict:
    with ctx.engine.connect() as lock_conn, lock_conn.begin():
        request = lock_conn.execute(
            text("SELECT status, grace_until FROM takedown_requests WHERE id = :id FOR UPDATE"), {"id": ctx.request_id}
        ).one()
        if request.status != TakedownStatus.WITHDRAWN or request.grace_until > now:
            return {"skipped": f"request is {request.status}"}
        records = lock_conn.execute(
            text("SELECT pr.id, pr.target, tr.emptied, pr.status FROM takedown_records tr "
                 "JOIN publish_records pr ON pr.id = tr.record_id WHERE tr.request_id = :id ORDER BY pr.id"),
            {"id": ctx.request_id},
        ).all()  # fmt: skip
        deleted = 0
        for record in records:
            if record.emptied and record.status != PublishRecordStatus.REMOVED:
                delete_record(ctx.engine, _target(ctx.targets, record.target), record.id, ctx.actor, ctx.request_id)
                deleted += 1
        lock_conn.execute(
            text(f"UPDATE publish_records pr SET status = :record_active FROM takedown_records tr "
                 f"WHERE tr.request_id = :id AND tr.record_id = pr.id AND pr.status = :record_pending "
                 f"AND NOT {_open_claims_elsewhere(ctx.request_id)}"),
            {"id": ctx.request_id, **_STATUSES},
        )  # fmt: skip
        lock_conn.execute(
            text("UPDATE takedown_requests SET status = :request_removed, removed_at = now(), resolved_at = now(), "
                 "last_error = NULL WHERE id = :id"),
            {"id": ctx.request_id, **_STATUSES},
        )  # fmt: skip
        details = {"records": len(records), "deleted": deleted}
        record_audit(lock_conn, ctx.actor, "takedown_stage2", "takedown_request", ctx.request_id, details=details)
        emit(lock_conn, TAKEDOWN_COMPLETED, {"takedown_request": ctx.request_id, **details})
    return details


def _restore(ctx: TakedownContext) -> dict:
    with ctx.engine.connect() as conn:
        records = conn.execute(
            text("SELECT pr.id, pr.target, pr.digest_date FROM takedown_records tr JOIN publish_records pr "
                 "ON pr.id = tr.record_id WHERE tr.request_id = :id AND tr.restored_at IS NULL ORDER BY pr.id"),
            {"id": ctx.request_id},
        ).all()  # fmt: skip
    for record in records:
        with ctx.engine.begin() as conn:
            conn.execute(
                text(f"UPDATE publish_records pr SET status = :record_active WHERE pr.id = :id "
                     f"AND pr.status = :record_pending AND NOT {_open_claims_elsewhere(ctx.request_id)}"),
                {"id": record.id, **_STATUSES},
            )  # fmt: skip
        publish_day(
            ctx.engine, ctx.store, _target(ctx.targets, record.target), record.digest_date, ctx.actor,
            reason=f"takedown {ctx.request_id} cancelled",
        )  # fmt: skip
        with ctx.engine.begin() as conn:
            conn.execute(
                text("UPDATE takedown_records SET restored_at = now() WHERE request_id = :rid AND record_id = :id"),
                {"rid": ctx.request_id, "id": record.id},
            )
            record_audit(conn, ctx.actor, "takedown_restore", "publish_record", record.id, target=record.target,
                         details={"request_id": ctx.request_id})  # fmt: skip
    return {"records": len(records), "trend_evidence": restate_trend_evidence(ctx)}


def process_takedowns(
    engine: Engine, store: ObjectStore, targets: Mapping[str, Target], actor: str,
    now: datetime | None = None, force: bool = False,
) -> TakedownRun:  # fmt: skip
    """Run every due stage: stage 1 of pending requests, stage 2 of withdrawn ones past their deadline,
    and the restore of cancelled ones. Failures are recorded on their request and reported in
    ``failures``; the other requests proceed. ``force`` ignores the retry backoff."""
    now = now or datetime.now(UTC)
    run = TakedownRun()
    for request_id, status, _ in due_takedowns(engine, now, force):
        ctx = TakedownContext(engine, store, targets, request_id, actor)
        try:
            if status == TakedownStatus.PENDING:
                run.steps[request_id] = _stage1(ctx)
                run.withdrawn.append(request_id)
            elif status == TakedownStatus.WITHDRAWN:
                run.steps[request_id] = _stage2(ctx, now)
                run.removed.append(request_id)
            else:
                run.steps[request_id] = _restore(ctx)
                run.restored.append(request_id)
        except Exception as error:  # recorded on the request, retried, and raised by the caller
            message = failure_message(error)
            run.failures[request_id] = message
            with engine.begin() as conn:
                conn.execute(
                    text("UPDATE takedown_requests SET attempts = attempts + 1, last_error = :error, "
                         "last_attempt_at = now() WHERE id = :id"),
                    {"id": request_id, "error": message},
                )  # fmt: skip
                record_audit(conn, actor, f"takedown_{status}", "takedown_request", request_id, outcome=FAILED,
                             details={"error": message})  # fmt: skip
    return run


def list_takedowns(engine: Engine) -> list[dict]:
    """Every request with its stage, deadline and the records it touched."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT tr.id, tr.status, tr.subject_kind, tr.subject, tr.reason, tr.requested_by, tr.requested_at,
                       tr.grace_until, tr.withdrawn_at, tr.removed_at, tr.cancelled_at, tr.cancelled_by,
                       tr.attempts, tr.last_error,
                       (SELECT count(*) FROM takedown_items ti WHERE ti.request_id = tr.id) AS items,
                       (SELECT count(*) FROM takedown_records r WHERE r.request_id = tr.id) AS records
                  FROM takedown_requests tr ORDER BY tr.id
                """
            )
        ).mappings()
        return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()} for row in rows]
