"""Which items are withdrawn by a takedown: the one definition digests, feeds, exports and trends share.

A takedown request (``takedown_requests``) resolves to items (``takedown_items``).
From the moment it is recorded until it is cancelled, its items are withdrawn
everywhere: ``pending`` (recorded, stage 1 not done yet), ``withdrawn`` (stage 1
done, waiting for the grace period in ``grace_until``) and ``removed`` (stage 2
done) all count; only ``cancelled`` gives the items back.
"""

from __future__ import annotations

from observatory_assets.lib.statuses import TakedownStatus

#: Requests in these states withdraw their items.
WITHDRAWING = (TakedownStatus.PENDING, TakedownStatus.WITHDRAWN, TakedownStatus.REMOVED)

#: SQL: the ids of every withdrawn item (for ``item_id NOT IN (…)`` or a join), from :data:`WITHDRAWING`.
WITHDRAWN_ITEM_IDS = f"""
SELECT ti.item_id
  FROM takedown_items ti JOIN takedown_requests tr ON tr.id = ti.request_id
 WHERE tr.status IN ({", ".join(f"'{status}'" for status in WITHDRAWING)})
"""


def item_withdrawn_sql(item_id_column: str) -> str:
    """SQL condition, true when the item in ``item_id_column`` (a trusted column reference such as
    ``r.id``) is withdrawn by a takedown."""
    return f"EXISTS (SELECT 1 FROM ({WITHDRAWN_ITEM_IDS}) w WHERE w.item_id = {item_id_column})"
