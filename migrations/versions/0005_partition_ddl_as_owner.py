"""Partition DDL as the owner: the application role (no DDL rights) creates and drops months.

In production the application connects as a role that owns nothing (docker/create-app-role.sql),
yet ingestion and the rollover create monthly partitions and retention detaches and drops them.
Both go through ``SECURITY DEFINER`` functions owned by the schema's owner, with a fixed
``search_path``: ``ensure_month_partition`` (from 0001) and ``drop_month_partition``, which only
ever drops a month partition (``<parent>_YYYY_MM``) of a partitioned table. Nobody but the owner
may execute them; create-app-role.sql grants EXECUTE to the application role.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER FUNCTION ensure_month_partition(regclass, date) SECURITY DEFINER SET search_path = public, pg_temp;
REVOKE EXECUTE ON FUNCTION ensure_month_partition(regclass, date) FROM PUBLIC;

-- Detach and drop one month partition, in the caller's transaction (retention locks it and proves it
-- unchanged since archiving first). Refuses anything but a month partition of a partitioned table.
CREATE FUNCTION drop_month_partition(month_partition regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    parent regclass;
BEGIN
    SELECT i.inhparent::regclass INTO parent
      FROM pg_inherits i
      JOIN pg_partitioned_table p ON p.partrelid = i.inhparent
      JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhrelid = month_partition
       AND c.relname = (SELECT relname FROM pg_class WHERE oid = i.inhparent) || '_' || substring(c.relname from '\d{4}_\d{2}$')
       AND c.relnamespace = 'public'::regnamespace;
    IF parent IS NULL THEN
        RAISE EXCEPTION '% is not a month partition of a partitioned table', month_partition
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, month_partition);
    EXECUTE format('DROP TABLE %s', month_partition);
END
$$;
REVOKE EXECUTE ON FUNCTION drop_month_partition(regclass) FROM PUBLIC;
"""

DOWNGRADE = """
DROP FUNCTION drop_month_partition(regclass);
GRANT EXECUTE ON FUNCTION ensure_month_partition(regclass, date) TO PUBLIC;
ALTER FUNCTION ensure_month_partition(regclass, date) SECURITY INVOKER RESET search_path;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
