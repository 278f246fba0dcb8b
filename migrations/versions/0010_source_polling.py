"""Sources and query designs as code, polled politely: catalog fields, polling state, fetch history.

- ``sources`` gains what the catalog says of it (poll spec, language hint, cost, aggregator) and its
  polling state (validators, last answer, schedule, back-off);
- ``source_fetches`` keeps one row per request, the history the ``auto`` interval and the cost estimate
  read;
- ``polling_hosts`` holds a host's ``Retry-After``;
- ``query_design_sources`` links designs to the sources they watch; ``query_designs`` gains a title;
- ``collection_runs`` counts fetch failures (a stale run is retried a bounded number of times) and
  remembers an ingestion given up, so the sensor's window never fills with it.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE sources
    ADD COLUMN poll              text NOT NULL DEFAULT 'auto',
    ADD COLUMN language          text,
    ADD COLUMN aggregator        boolean NOT NULL DEFAULT false,
    ADD COLUMN cost_per_request  numeric(12, 4) NOT NULL DEFAULT 0 CHECK (cost_per_request >= 0),
    ADD COLUMN cost_per_1k_items numeric(12, 4) NOT NULL DEFAULT 0 CHECK (cost_per_1k_items >= 0),
    ADD COLUMN catalog_file      text,
    ADD COLUMN etag              text,
    ADD COLUMN last_modified     text,
    ADD COLUMN last_status       integer,
    ADD COLUMN last_checked_at   timestamptz,
    ADD COLUMN next_check_at     timestamptz,
    ADD COLUMN min_interval_s    integer,
    ADD COLUMN error_count       integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error        text;
CREATE INDEX sources_due ON sources (next_check_at NULLS FIRST) WHERE active AND url IS NOT NULL;

CREATE TABLE source_fetches (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id         bigint NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    fetched_at        timestamptz NOT NULL DEFAULT now(),
    status            integer,
    items             integer,
    bytes             bigint,
    collection_run_id bigint REFERENCES collection_runs (id) ON DELETE SET NULL,
    error             text
);
CREATE INDEX source_fetches_recent ON source_fetches (source_id, fetched_at DESC);

CREATE TABLE polling_hosts (
    host              text PRIMARY KEY,
    retry_after_until timestamptz NOT NULL
);

ALTER TABLE query_designs ADD COLUMN title text;
CREATE TABLE query_design_sources (
    query_design_id bigint NOT NULL REFERENCES query_designs (id) ON DELETE CASCADE,
    source_id       bigint NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    PRIMARY KEY (query_design_id, source_id)
);
CREATE INDEX query_design_sources_source ON query_design_sources (source_id);

ALTER TABLE collection_runs
    ADD COLUMN fetch_failures      integer NOT NULL DEFAULT 0,
    ADD COLUMN ingest_abandoned_at timestamptz;
CREATE INDEX collection_runs_running ON collection_runs (started_at) WHERE status = 'running';
"""

DOWNGRADE = """
ALTER TABLE collection_runs DROP COLUMN fetch_failures, DROP COLUMN ingest_abandoned_at;
DROP TABLE query_design_sources;
ALTER TABLE query_designs DROP COLUMN title;
DROP TABLE polling_hosts;
DROP TABLE source_fetches;
DROP INDEX sources_due;
ALTER TABLE sources
    DROP COLUMN poll, DROP COLUMN language, DROP COLUMN aggregator, DROP COLUMN cost_per_request,
    DROP COLUMN cost_per_1k_items, DROP COLUMN catalog_file, DROP COLUMN etag, DROP COLUMN last_modified,
    DROP COLUMN last_status, DROP COLUMN last_checked_at, DROP COLUMN next_check_at, DROP COLUMN min_interval_s,
    DROP COLUMN error_count, DROP COLUMN last_error;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
