"""Embedding spaces of the lexical embedder: document frequencies learned from the archive, in Postgres.

* **Incremental counts.** Embedding a collection run also counts, per feature
  bucket, how many of its items contain it, and stores that as the run's row of
  ``lexical_run_frequencies`` (replaced when the run is embedded again, removed
  with the run): the sum over the rows is the archive's document frequencies.
* **Frozen snapshots.** Vectors are computed against a *space*, a snapshot of
  that sum in ``lexical_spaces``, never against the moving counts: an item's
  vector depends only on the item and the space, not on which run or chunk it
  came in. The first embedding run of an archive takes the first snapshot
  (counting every run collected so far first); :func:`new_space` takes a new
  one when the archive has changed enough (``archive_documents`` against
  ``space_documents`` in the ``item_embeddings`` metadata tells). A new space
  has a new name, so every item is embedded again as its partition is
  re-materialized, and events are rebuilt in the new space: two spaces never mix.
* **Mean and join threshold.** Each snapshot also fixes the mean vector that
  is removed from every vector (mean-centring) and the similarity from which
  two items tell the same story, both from a deterministic sample of the
  archive (the first ``THRESHOLD_SAMPLE`` items by content hash; see
  :func:`calibrated` and :func:`derived_threshold`).
* **Cold start.** A sample of fewer than ``MIN_CALIBRATION_SAMPLE`` items is too
  small to say what all items share: a handful of tellings of one story *are*
  the mean, and removing it would leave only their differences. Such a space
  is not centred and joins from ``UNCALIBRATED_THRESHOLD``, so the first items
  of a new installation are grouped as soon as they arrive.
* **A provisional space is settled once.** A space taken from fewer than
  ``MIN_CALIBRATION_SAMPLE`` documents is provisional: the first embedding after
  the archive has grown past that size takes a calibrated one
  (:func:`settle_provisional_space`), and the items embedded before are embedded
  again in it. Without this, a fresh installation's first collection run would
  fix the document frequencies, the (missing) centring and the threshold for
  good. It happens once in an archive's life, while it is small; later drift is
  shown in the metadata and a new space is taken on purpose (:func:`new_space`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from sqlalchemy import Engine

from observatory_assets.defs.enrichment.lexical import BUCKETS, LexicalEmbedder, LexicalSpace
from observatory_assets.defs.enrichment.vectors import LEAD_CHARS

#: Items of the archive whose pairwise similarities calibrate a new space's join threshold.
THRESHOLD_SAMPLE = 2000
#: The join threshold sits this many robust standard deviations above the median similarity of the
#: sample's pairs (nearly all unrelated): about one unrelated pair in a thousand reaches it.
THRESHOLD_DEVIATIONS = 3.0
#: Never join below (a near-empty archive has too little spread to calibrate on).
MIN_THRESHOLD = 0.1
#: Fewest sample items from which a space is mean-centred and its threshold derived (see module).
MIN_CALIBRATION_SAMPLE = 200
#: The join threshold of a space too small to calibrate: uncentred TF-IDF cosine of two tellings of one story.
UNCALIBRATED_THRESHOLD = 0.3
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('observatory.lexical_spaces'))"
_RUN_DOCUMENTS = f"SELECT title, left(text, {2 * LEAD_CHARS}) FROM raw_items WHERE collection_run_id = %s"


def pack_frequencies(counts: np.ndarray) -> bytes:
    """A run's bucket counts as sorted little-endian int32 (bucket, documents) pairs of the non-zero buckets."""
    buckets = np.flatnonzero(counts)
    return np.column_stack([buckets, counts[buckets]]).astype("<i4").tobytes()


def unpack_frequencies(packed: bytes, into: np.ndarray) -> None:
    """Add packed (bucket, documents) pairs to the dense counts ``into``."""
    pairs = np.frombuffer(packed, dtype="<i4").reshape(-1, 2)
    np.add.at(into, pairs[:, 0], pairs[:, 1])


def record_run_frequencies(conn, run_id: int, documents: int, counts: np.ndarray) -> None:
    """Store (replace) what collection run ``run_id`` adds to the archive's document frequencies."""
    conn.execute(
        """
        INSERT INTO lexical_run_frequencies (collection_run_id, documents, frequencies) VALUES (%s, %s, %s)
        ON CONFLICT (collection_run_id) DO UPDATE
           SET documents = EXCLUDED.documents, frequencies = EXCLUDED.frequencies, counted_at = now()
        """,
        (run_id, documents, pack_frequencies(counts)),
    )


def _count_uncounted_runs(conn) -> None:
    """Count the runs that have items but no frequencies yet (an archive from before this embedder)."""
    runs = conn.execute(
        "SELECT c.id FROM collection_runs c WHERE NOT EXISTS "
        "(SELECT 1 FROM lexical_run_frequencies f WHERE f.collection_run_id = c.id) ORDER BY c.id"
    ).fetchall()
    counter = LexicalEmbedder(_empty_space())
    for (run_id,) in runs:
        counts, documents = np.zeros(BUCKETS, np.int64), 0
        with conn.cursor(name=f"uncounted_run_{run_id}") as cursor:
            cursor.execute(_RUN_DOCUMENTS, (run_id,))
            while rows := cursor.fetchmany(5000):
                counts += counter.embed_and_count(rows)[1]
                documents += len(rows)
        if documents:
            record_run_frequencies(conn, run_id, documents, counts)


def archive_frequencies(conn) -> tuple[int, np.ndarray]:
    """The archive's document count and document frequencies: the sum of every run's counts."""
    total, frequencies = 0, np.zeros(BUCKETS, np.int64)
    with conn.cursor(name="lexical_run_frequencies") as cursor:
        cursor.execute("SELECT documents, frequencies FROM lexical_run_frequencies")
        for documents, packed in cursor:
            total += documents
            unpack_frequencies(packed, frequencies)
    return total, frequencies


def derived_threshold(vectors: np.ndarray) -> float:
    """The join threshold of a space: ``THRESHOLD_DEVIATIONS`` robust standard deviations (1.4826 × MAD)
    above the median similarity of the sample's pairs, nearly all of which tell different stories."""
    vectors = vectors[np.linalg.norm(vectors, axis=1) > 0]
    if len(vectors) < MIN_CALIBRATION_SAMPLE:
        return UNCALIBRATED_THRESHOLD
    similarities = (vectors @ vectors.T)[np.triu_indices(len(vectors), 1)]
    median = float(np.median(similarities))
    spread = 1.4826 * float(np.median(np.abs(similarities - median)))
    return round(max(MIN_THRESHOLD, median + THRESHOLD_DEVIATIONS * spread), 4)


def _empty_space() -> LexicalSpace:
    return LexicalSpace(id=0, documents=0, document_frequencies=np.zeros(BUCKETS, np.int32))


def calibrated(space: LexicalSpace, sample: list) -> LexicalSpace:
    """``space`` with the mean vector and join threshold of a sample of documents (see module); a sample
    too small to calibrate on leaves the space uncentred with the uncalibrated threshold."""
    vectors = LexicalEmbedder(space).embed(sample)
    kept = vectors[vectors.any(axis=1)]
    if len(kept) < MIN_CALIBRATION_SAMPLE:
        return replace(space, mean=np.zeros_like(space.mean), join_threshold=UNCALIBRATED_THRESHOLD)
    mean = kept.mean(axis=0).astype(np.float32)
    centred = replace(space, mean=mean)
    return replace(centred, join_threshold=derived_threshold(LexicalEmbedder(centred).embed(sample)))


def _take_snapshot(conn) -> LexicalSpace:
    documents, frequencies = archive_frequencies(conn)
    sample = conn.execute(
        f"SELECT title, left(text, {2 * LEAD_CHARS}) FROM raw_items ORDER BY content_hash LIMIT %s",
        (THRESHOLD_SAMPLE,),
    ).fetchall()
    space = calibrated(LexicalSpace(0, documents, frequencies.astype(np.int32)), sample)
    space_id = conn.execute(
        "INSERT INTO lexical_spaces (documents, document_frequencies, mean, join_threshold) "
        "VALUES (%s, %s, %s, %s) RETURNING id",
        (
            documents,
            space.document_frequencies.astype("<i4").tobytes(),
            space.mean.astype("<f4").tobytes(),
            space.join_threshold,
        ),
    ).fetchone()[0]
    return replace(space, id=space_id)


def _latest(conn) -> LexicalSpace | None:
    row = conn.execute(
        "SELECT id, documents, document_frequencies, mean, join_threshold FROM lexical_spaces ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    frequencies = np.frombuffer(row[2], dtype="<i4").astype(np.int32)
    mean = np.frombuffer(row[3], dtype="<f4").astype(np.float32)
    return LexicalSpace(row[0], row[1], frequencies, join_threshold=row[4], mean=mean)


def current_space(engine: Engine) -> LexicalSpace:
    """The newest snapshot; the first one is taken from the archive when there is none and the archive
    has items (an empty archive gets an unsaved space ``s0`` that nothing is embedded with)."""
    with engine.connect() as sa_conn:
        conn = sa_conn.connection.driver_connection
        with conn.transaction():
            space = _latest(conn)
            if space is not None:
                return space
            conn.execute(_LOCK)
            space = _latest(conn)
            if space is not None:
                return space
            if conn.execute("SELECT NOT EXISTS (SELECT 1 FROM raw_items)").fetchone()[0]:
                return _empty_space()
            _count_uncounted_runs(conn)
            return _take_snapshot(conn)


def settle_provisional_space(engine: Engine) -> LexicalSpace | None:
    """The calibrated space that replaces a provisional one (see module), taken now if the archive has
    reached ``MIN_CALIBRATION_SAMPLE`` items; None when the newest space stands (or there is none yet)."""
    with engine.connect() as sa_conn:
        conn = sa_conn.connection.driver_connection
        with conn.transaction():
            if not _latest_is_provisional(conn) or not _archive_reaches(conn, MIN_CALIBRATION_SAMPLE):
                return None
            conn.execute(_LOCK)
            if not _latest_is_provisional(conn):  # another run settled it meanwhile
                return None
            _count_uncounted_runs(conn)
            return _take_snapshot(conn)


def _latest_is_provisional(conn) -> bool:
    """Whether the newest space was taken from too few documents to calibrate on (read without its
    megabytes of frequencies: every embedding run asks)."""
    row = conn.execute("SELECT documents FROM lexical_spaces ORDER BY id DESC LIMIT 1").fetchone()
    return row is not None and row[0] < MIN_CALIBRATION_SAMPLE


def _archive_reaches(conn, items: int) -> bool:
    return conn.execute("SELECT count(*) >= %s FROM (SELECT FROM raw_items LIMIT %s) s", (items, items)).fetchone()[0]


def new_space(engine: Engine) -> LexicalSpace:
    """Take a new snapshot of the archive's document frequencies (items are embedded again in it)."""
    with engine.connect() as sa_conn:
        conn = sa_conn.connection.driver_connection
        with conn.transaction():
            conn.execute(_LOCK)
            _count_uncounted_runs(conn)
            return _take_snapshot(conn)


def space_status(engine: Engine, space: LexicalSpace) -> dict:
    """How far the archive has moved since ``space`` was taken: its documents then and now."""
    with engine.connect() as sa_conn:
        archive = sa_conn.exec_driver_sql("SELECT coalesce(sum(documents), 0) FROM lexical_run_frequencies").scalar()
    return {"space_documents": space.documents, "archive_documents": int(archive)}
