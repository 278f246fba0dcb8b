"""The Observatory data model (SPEC §3).

Written as explicit DDL: autogenerate does not understand ``PARTITION BY``.
``raw_items`` and ``trend_snapshots`` are RANGE-partitioned by month with a
DEFAULT partition; ``ensure_month_partition`` creates a month on demand (and
moves any rows of that month out of DEFAULT first), so ingestion and the
rollover schedule share one definition of a partition.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

EMBEDDING_DIMENSIONS = 384

UPGRADE = f"""
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE sources (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    type            text NOT NULL CHECK (type IN ('rss', 'atom', 'jsonl', 'csv', 'ndjson', 'api', 'other')),
    url             text,
    credibility     real NOT NULL DEFAULT 0.5 CHECK (credibility BETWEEN 0 AND 1),
    config          jsonb NOT NULL DEFAULT '{{}}',
    active          boolean NOT NULL DEFAULT true,
    last_fetched_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE query_designs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    search_terms  jsonb NOT NULL DEFAULT '[]',   -- [{{"term": "...", "language": "da"}}, ...]
    arenas        jsonb NOT NULL DEFAULT '{{}}',   -- sources/arenas configuration
    owner         text,
    credit_budget numeric(12, 2),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE collection_runs (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    query_design_id   bigint REFERENCES query_designs (id),
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    attempt           integer NOT NULL DEFAULT 0,   -- bumped each time the run completes
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    completed_at      timestamptz,
    ingested_at       timestamptz,
    items_collected   integer NOT NULL DEFAULT 0,
    items_loaded      integer NOT NULL DEFAULT 0,
    items_duplicate   integer NOT NULL DEFAULT 0,
    items_rejected    integer NOT NULL DEFAULT 0,
    credits_estimated numeric(12, 2),
    credits_used      numeric(12, 2),
    payload_prefix    text,                          -- object-storage prefix of the raw payloads
    payloads          jsonb NOT NULL DEFAULT '[]',  -- [{{"key", "source", "format", "records", "sha256"}}]
    ingest_fingerprint text,
    error             text
);
CREATE INDEX collection_runs_completed ON collection_runs (completed_at, id) WHERE status = 'completed';

-- Dedup across partitions: one row per kept item, unique on both exact keys. Its source and
-- run are foreign-key checked on the raw_items row written in the same transaction, so they
-- are not checked twice on this hot path.
CREATE TABLE item_keys (
    item_id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id         bigint NOT NULL,
    external_id       text NOT NULL,
    content_hash      bytea NOT NULL UNIQUE,
    published_at      timestamptz,
    collection_run_id bigint NOT NULL,
    record_no         integer NOT NULL,
    UNIQUE (source_id, external_id),
    UNIQUE (collection_run_id, record_no)
);

CREATE TABLE raw_items (
    id                   bigint NOT NULL,
    source_id            bigint NOT NULL REFERENCES sources (id),
    collection_run_id    bigint NOT NULL REFERENCES collection_runs (id),
    record_no            integer NOT NULL,
    external_id          text NOT NULL,
    url                  text,
    title                text,
    text                 text,
    author               text,
    published_at         timestamptz,
    fetched_at           timestamptz NOT NULL,
    language             text,
    language_confidence  real,          -- of the detected language (item_features), 0-1
    content_hash         bytea NOT NULL,
    search_terms_matched text[] NOT NULL DEFAULT '{{}}',
    raw_metadata         jsonb NOT NULL DEFAULT '{{}}',
    processing_status    text NOT NULL DEFAULT 'loaded',
    text_search_config   regconfig,
    search_vector        tsvector      -- filled by item_features, off the ingest hot path
) PARTITION BY RANGE (published_at);
CREATE TABLE raw_items_default PARTITION OF raw_items DEFAULT;
CREATE INDEX raw_items_id ON raw_items (id);
CREATE INDEX raw_items_source_published ON raw_items (source_id, published_at);
CREATE INDEX raw_items_published ON raw_items (published_at);
CREATE INDEX raw_items_content_hash ON raw_items (content_hash);
CREATE INDEX raw_items_run ON raw_items (collection_run_id);
CREATE INDEX raw_items_terms ON raw_items USING gin (search_terms_matched);
CREATE INDEX raw_items_metadata ON raw_items USING gin (raw_metadata jsonb_path_ops);
CREATE INDEX raw_items_search ON raw_items USING gin (search_vector);

-- Rows the collector delivered that repeat a kept item: counted and linked, not lost.
CREATE TABLE item_duplicates (
    collection_run_id    bigint NOT NULL REFERENCES collection_runs (id),
    record_no            integer NOT NULL,
    source_id            bigint NOT NULL REFERENCES sources (id),
    external_id          text NOT NULL,
    duplicate_of_item_id bigint NOT NULL REFERENCES item_keys (item_id),
    matched_on           text NOT NULL CHECK (matched_on IN ('source_external_id', 'content_hash')),
    PRIMARY KEY (collection_run_id, record_no)
);
CREATE INDEX item_duplicates_of ON item_duplicates (duplicate_of_item_id);

CREATE TABLE rejected_items (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection_run_id bigint NOT NULL REFERENCES collection_runs (id),
    record_no         integer NOT NULL,
    source_id         bigint REFERENCES sources (id),
    reason            text NOT NULL,          -- machine-readable code, e.g. 'unparseable_date'
    detail            text NOT NULL DEFAULT '',
    payload           text,                   -- the raw record, or an excerpt when it is huge
    payload_key       text,                   -- object key of the run payload holding the full record
    payload_bytes     bigint,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (collection_run_id, record_no)
);
CREATE INDEX rejected_items_reason ON rejected_items (reason);

CREATE TABLE item_embeddings (
    item_id     bigint PRIMARY KEY REFERENCES item_keys (item_id) ON DELETE CASCADE,
    embedder    text NOT NULL,
    dimensions  integer NOT NULL,
    embedding   vector({EMBEDDING_DIMENSIONS}) NOT NULL,
    embedded_at timestamptz NOT NULL DEFAULT now()
);
-- m/ef_construction below pgvector's defaults (16/64): inserting into the graph is the dominant cost of
-- embedding (measured ~8x faster on 2 cores); REINDEX with larger values if search recall matters more.
CREATE INDEX item_embeddings_hnsw ON item_embeddings USING hnsw (embedding vector_cosine_ops)
    WITH (m = 8, ef_construction = 32);

CREATE TABLE events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    embedder      text NOT NULL,                 -- the space of the centroid (item_embeddings.embedder)
    centroid      vector({EMBEDDING_DIMENSIONS}) NOT NULL,
    canonical_item_id bigint REFERENCES item_keys (item_id) ON DELETE SET NULL,  -- the most central item
    title         text,
    summary       text,
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    item_count    integer NOT NULL DEFAULT 0,
    source_count  integer NOT NULL DEFAULT 0,
    categories    text[] NOT NULL DEFAULT '{{}}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_last_seen ON events (last_seen_at);
CREATE INDEX events_centroid_hnsw ON events USING hnsw (centroid vector_cosine_ops) WITH (m = 8, ef_construction = 32);

CREATE TABLE event_items (
    item_id     bigint PRIMARY KEY REFERENCES item_keys (item_id) ON DELETE CASCADE,
    event_id    bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    similarity  real NOT NULL,                -- to the event's centroid when the item joined it
    item_time   timestamptz NOT NULL,         -- the item's publication (else fetch) time
    item_hash   bytea NOT NULL,               -- its content hash: ties in time are ordered by it
    source_id   bigint NOT NULL REFERENCES sources (id),
    assigned_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_items_event ON event_items (event_id);
CREATE INDEX event_items_order ON event_items (item_time, item_hash);

CREATE TABLE trends (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name               text NOT NULL UNIQUE,
    definition         jsonb NOT NULL DEFAULT '{{}}',  -- indicator terms and categories
    baseline_log_odds  double precision NOT NULL DEFAULT 0,
    current_log_odds   double precision NOT NULL DEFAULT 0,
    half_life_hours    double precision NOT NULL DEFAULT 168 CHECK (half_life_hours > 0),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE trend_evidence (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trend_id       bigint NOT NULL REFERENCES trends (id) ON DELETE CASCADE,
    event_id       bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    signal         text NOT NULL,
    credibility    double precision NOT NULL,
    corroboration  double precision NOT NULL,
    novelty        double precision NOT NULL,
    severity       double precision NOT NULL,
    delta_log_odds double precision NOT NULL,
    reasoning      text NOT NULL DEFAULT '',
    observed_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (trend_id, event_id, signal)
);

CREATE TABLE trend_snapshots (
    trend_id       bigint NOT NULL REFERENCES trends (id) ON DELETE CASCADE,
    snapshot_date  date NOT NULL,
    log_odds       double precision NOT NULL,
    probability    double precision NOT NULL,
    evidence_count integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (trend_id, snapshot_date)
) PARTITION BY RANGE (snapshot_date);
CREATE TABLE trend_snapshots_default PARTITION OF trend_snapshots DEFAULT;

CREATE TABLE publish_records (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target           text NOT NULL,
    external_post_id text NOT NULL,
    content_hash     text NOT NULL,
    title            text,
    url              text,
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'takedown_pending', 'removed')),
    published_at     timestamptz NOT NULL DEFAULT now(),
    removed_at       timestamptz,
    UNIQUE (target, external_post_id),
    UNIQUE (target, content_hash)
);

CREATE TABLE takedown_requests (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    publish_record_id bigint REFERENCES publish_records (id),
    item_id           bigint REFERENCES item_keys (item_id),
    requested_by      text NOT NULL,
    reason            text NOT NULL,
    status            text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'rejected')),
    requested_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at       timestamptz,
    CHECK (publish_record_id IS NOT NULL OR item_id IS NOT NULL)
);

CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,   -- publish, takedown, restore, export, ...
    object_type text NOT NULL,
    object_id   text,
    details     jsonb NOT NULL DEFAULT '{{}}'
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE exports (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id   text NOT NULL,   -- who asked: a Dagster run id or a CLI request; a retry reuses it
    format       text NOT NULL CHECK (format IN ('csv', 'xlsx', 'ndjson', 'parquet', 'gexf')),
    filters      jsonb NOT NULL DEFAULT '{{}}',
    object_key   text,
    record_count bigint,
    sha256       text,
    status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    UNIQUE (request_id, format)
);

CREATE TABLE backups (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    object_key   text NOT NULL UNIQUE,
    size_bytes   bigint,
    sha256       text,
    table_counts jsonb NOT NULL DEFAULT '{{}}',     -- rows per table in the dump's snapshot
    table_checksums jsonb NOT NULL DEFAULT '{{}}',  -- content fingerprints of key tables, same snapshot
    status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed', 'pruned')),
    error        text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    verified_at  timestamptz
);
CREATE INDEX backups_completed ON backups (started_at DESC) WHERE status = 'completed';

-- One definition of a monthly partition, shared by ingestion and the rollover schedule.
-- Creates <parent>_YYYY_MM for the month of month_start unless it exists; rows of that
-- month waiting in the DEFAULT partition are moved into it in the same transaction.
CREATE FUNCTION ensure_month_partition(parent regclass, month_start date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    parent_name  text := (SELECT relname FROM pg_class WHERE oid = parent);
    partition    text := parent_name || '_' || to_char(month_start, 'YYYY_MM');
    default_part text := parent_name || '_default';
    key_column   text;
    key_type     regtype;
    lower_bound  text;
    upper_bound  text;
    waiting      boolean;
BEGIN
    month_start := date_trunc('month', month_start)::date;
    IF to_regclass(quote_ident(partition)) IS NOT NULL THEN
        RETURN false;
    END IF;
    SELECT a.attname, a.atttypid::regtype INTO key_column, key_type
      FROM pg_partitioned_table p
      JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
     WHERE p.partrelid = parent;
    IF key_type = 'timestamp with time zone'::regtype THEN
        lower_bound := (month_start::timestamp AT TIME ZONE 'UTC')::text;
        upper_bound := ((month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC')::text;
    ELSE
        lower_bound := month_start::text;
        upper_bound := (month_start + interval '1 month')::date::text;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(partition));
    IF to_regclass(quote_ident(partition)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= %L AND %I < %L)',
                   default_part, key_column, lower_bound, key_column, upper_bound) INTO waiting;
    IF NOT waiting THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                       partition, parent, lower_bound, upper_bound);
    ELSE
        EXECUTE format('CREATE TABLE %I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', partition, parent);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= %L AND %I < %L RETURNING *) '
                       'INSERT INTO %I SELECT * FROM moved',
                       default_part, key_column, lower_bound, key_column, upper_bound, partition);
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       parent, partition, lower_bound, upper_bound);
    END IF;
    RETURN true;
END
$$;

SELECT ensure_month_partition(parent, (date_trunc('month', now() AT TIME ZONE 'UTC') + step * interval '1 month')::date)
  FROM unnest(ARRAY['raw_items', 'trend_snapshots']::regclass[]) AS parent,
       generate_series(-1, 3) AS step;
"""

DOWNGRADE = """
DROP FUNCTION IF EXISTS ensure_month_partition(regclass, date);
DROP TABLE IF EXISTS backups, exports, audit_log, takedown_requests, publish_records,
    trend_snapshots, trend_evidence, trends, event_items, events, item_embeddings,
    rejected_items, item_duplicates, raw_items, item_keys, collection_runs,
    query_designs, sources CASCADE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
