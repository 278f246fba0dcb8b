"""Every status column has a CHECK constraint, and its enum in lib/statuses.py lists exactly its values;
the enums go to SQL as parameters and compare equal to what the database returns."""

import re

from sqlalchemy import text

from observatory_assets.lib.statuses import STATUS_COLUMNS, CollectionRunStatus

# Every CHECK constraint of a public table that names exactly one column whose name ends in "status" or is
# one of the other columns given an enum (a kind).
_STATUS_CHECKS = """
SELECT c.conrelid::regclass::text AS table_name, a.attname AS column_name, pg_get_constraintdef(c.oid) AS definition
  FROM pg_constraint c
  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
 WHERE c.contype = 'c' AND cardinality(c.conkey) = 1
   AND (a.attname LIKE '%status' OR (c.conrelid::regclass::text, a.attname::text) IN (SELECT * FROM unnest(
        CAST(:tables AS text[]), CAST(:columns AS text[]))))
   AND c.connamespace = 'public'::regnamespace
   AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.conrelid)
"""
# Every text column whose name ends in "status", of a public table (a partition's columns are its parent's).
_STATUS_COLUMNS = """
SELECT t.relname::text, a.attname::text
  FROM pg_attribute a JOIN pg_class t ON t.oid = a.attrelid
 WHERE t.relnamespace = 'public'::regnamespace AND t.relkind IN ('r', 'p') AND NOT t.relispartition
   AND a.attnum > 0 AND NOT a.attisdropped AND a.attname LIKE '%status' AND a.atttypid = 'text'::regtype
"""


def test_each_status_enum_equals_its_check_constraint(engine):
    with engine.connect() as conn:
        named = {"tables": [table for table, _ in STATUS_COLUMNS], "columns": [column for _, column in STATUS_COLUMNS]}
        checks = {
            (row.table_name, row.column_name): row.definition for row in conn.execute(text(_STATUS_CHECKS), named)
        }
        columns = set(conn.execute(text(_STATUS_COLUMNS)).tuples())
    assert set(checks) == set(STATUS_COLUMNS)
    assert columns == {column for column in STATUS_COLUMNS if column[1].endswith("status")}
    for column, enum in STATUS_COLUMNS.items():
        allowed = set(re.findall(r"'([^']*)'::text", checks[column]))
        assert allowed == {member.value for member in enum}, column


def test_an_enum_is_bound_as_its_value_and_compares_equal_to_what_comes_back(engine):
    with engine.connect() as conn:
        value = conn.execute(text("SELECT CAST(:status AS text)"), {"status": CollectionRunStatus.COMPLETED}).scalar()
    assert value == "completed" == CollectionRunStatus.COMPLETED
