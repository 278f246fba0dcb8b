"""The values of every status column, as types: one ``StrEnum`` per column, equal to its CHECK constraint.

Code passes these to SQL as bound parameters (a ``StrEnum`` is a ``str``, so psycopg sends its value as
text) instead of spelling status literals, so a misspelt status is an ``AttributeError`` at import time,
not a query that silently matches nothing. ``tests/test_statuses.py`` holds each enum to its table's
CHECK constraint in the migrated database.
"""

from __future__ import annotations

from enum import StrEnum


class CollectionRunStatus(StrEnum):
    """``collection_runs.status``: a run moves pending → running → completed, or failed with its error."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class ProcessingStatus(StrEnum):
    """``raw_items.processing_status``: loaded by ingestion, featurized by ``item_features``."""

    LOADED = "loaded"
    FEATURIZED = "featurized"


class ExportStatus(StrEnum):
    """``exports.status``: an export file is running until it is stored (completed) or failed."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class BackupStatus(StrEnum):
    """``backups.status``: running until the dump is stored (completed) or failed; pruned once deleted."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PRUNED = "pruned"


class PublishRecordStatus(StrEnum):
    """``publish_records.status``: active; takedown_pending while a takedown re-publishes it; removed for good."""

    ACTIVE = "active"
    TAKEDOWN_PENDING = "takedown_pending"
    REMOVED = "removed"


class TakedownStatus(StrEnum):
    """``takedown_requests.status``: the stages of a takedown request."""

    PENDING = "pending"
    WITHDRAWN = "withdrawn"
    REMOVED = "removed"
    CANCELLED = "cancelled"


class CreditTransactionKind(StrEnum):
    """``credit_transactions.kind``: a run's credits are reserved, then settled at cost; the rest of the hold
    is released (or expires when the run never ends)."""

    RESERVE = "reserve"
    SETTLE = "settle"
    RELEASE = "release"
    EXPIRE = "expire"


class WebhookSubscriptionStatus(StrEnum):
    """``webhook_subscriptions.status``: enabled until disabled (by hand, or by a receiver answering 410)."""

    ENABLED = "enabled"
    DISABLED = "disabled"


class WebhookMessageStatus(StrEnum):
    """``webhook_messages.status``: pending until delivered, or failed once its retries are exhausted."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDeliveryOutcome(StrEnum):
    """``webhook_deliveries.outcome``: what one attempt led to."""

    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"
    DISABLED = "disabled"


#: Each status column ``(table, column)`` (or kind column, a status in all but name) and the enum of its values.
STATUS_COLUMNS: dict[tuple[str, str], type[StrEnum]] = {
    ("collection_runs", "status"): CollectionRunStatus,
    ("raw_items", "processing_status"): ProcessingStatus,
    ("exports", "status"): ExportStatus,
    ("backups", "status"): BackupStatus,
    ("publish_records", "status"): PublishRecordStatus,
    ("takedown_requests", "status"): TakedownStatus,
    ("credit_transactions", "kind"): CreditTransactionKind,
    ("webhook_subscriptions", "status"): WebhookSubscriptionStatus,
    ("webhook_messages", "status"): WebhookMessageStatus,
    ("webhook_deliveries", "outcome"): WebhookDeliveryOutcome,
}
