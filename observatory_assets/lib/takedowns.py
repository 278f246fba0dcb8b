"""Which items are withdrawn by a takedown: the one definition digests, feeds, exports and trends share.

A takedown request (``takedown_requests``) resolves to items (``takedown_items``).
From the moment it is recorded until it is cancelled, its items are withdrawn
everywhere: ``pending`` (recorded, stage 1 not done yet), ``withdrawn`` (stage 1
done, waiting for the grace period in ``grace_until``) and ``removed`` (stage 2
done) all count; only ``cancelled`` gives the items back.

The definition is a SQLAlchemy Core expression (:func:`withdrawn_item_ids`, :func:`item_withdrawn`);
statements written as SQL text take it rendered (:data:`WITHDRAWN_ITEM_IDS`, :func:`item_withdrawn_sql`).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ColumnElement, Select, Text, exists, literal_column, select, table
from sqlalchemy import column as sql_column
from sqlalchemy.dialects.postgresql import psycopg

from observatory_assets.lib.statuses import TakedownStatus

#: Requests in these states withdraw their items.
WITHDRAWING = (TakedownStatus.PENDING, TakedownStatus.WITHDRAWN, TakedownStatus.REMOVED)

_items = table("takedown_items", sql_column("item_id", BigInteger), sql_column("request_id", BigInteger))
_requests = table("takedown_requests", sql_column("id", BigInteger), sql_column("status", Text))


def withdrawn_item_ids() -> Select:
    """The ids of every withdrawn item (``item_id``), from :data:`WITHDRAWING`."""
    return (
        select(_items.c.item_id)
        .join(_requests, _requests.c.id == _items.c.request_id)
        .where(_requests.c.status.in_([status.value for status in WITHDRAWING]))
    )


def item_withdrawn(item_id: ColumnElement) -> ColumnElement[bool]:
    """True when the item whose id is ``item_id`` (a column of the enclosing query) is withdrawn."""
    return exists(withdrawn_item_ids().where(_items.c.item_id == item_id))


def _as_sql(clause) -> str:
    return str(clause.compile(dialect=psycopg.dialect(), compile_kwargs={"literal_binds": True}))


#: SQL: :func:`withdrawn_item_ids` for statements written as text (``item_id NOT IN (…)`` or a join).
WITHDRAWN_ITEM_IDS = _as_sql(withdrawn_item_ids())


def item_withdrawn_sql(item_id_column: str) -> str:
    """SQL condition, true when the item in ``item_id_column`` (a trusted column reference such as
    ``r.id``) is withdrawn by a takedown: :func:`item_withdrawn` for statements written as text."""
    return _as_sql(item_withdrawn(literal_column(item_id_column)))
