"""One polling cycle: the due sources checked once each, at most one collection run per query design.

A cycle

1. **claims** the catalog sources that are due (``FOR UPDATE SKIP LOCKED``, so two cycles never take
   the same source; a claimed source is leased for :data:`CLAIM_LEASE`, the time after which a cycle's run
   is stale, so one killed mid-cycle is not fetched twice before its run is recovered, see
   :mod:`.recovery`), leaving out hosts under a ``Retry-After``;
2. **plans** one collection run per query design of the claimed sources (plus one for the sources in
   no design), estimates each design's cost (``per_request`` per due source plus ``per_1k_items`` × the
   median items of the source's last 10 fetches, 100 when none; a shared source's cost split evenly)
   and reserves it (:mod:`.charges`); a design short of credits sends no request and gets no run (the
   hard stop: audited, and a ``budget.exhausted`` webhook queued in the same transaction, once per
   exhaustion);
3. **fetches** every claimed source once, concurrently, at most ``per_host`` at a time per host, with
   conditional GET; a changed body is stored under the run of its first design;
4. **records** each answer on its source (validators, status, schedule, back-off, a 301/308's new URL,
   a 410's deactivation, both audited), a host's ``Retry-After``, the fetch history, and completes the
   runs that hold changed payloads (the collection-run sensor ingests them). A run with nothing changed
   is removed, or, when it holds a reservation, kept as an empty, already ingested run settled at what
   its requests cost.

Runs that cannot get stuck are :mod:`.recovery`'s; what the CLI and the UI show of the sources is
:mod:`.catalog`'s read model.
"""

from __future__ import annotations

import json
import queue
import threading
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import zip_longest

from sqlalchemy import Connection, Engine, text

from observatory_assets.defs.collection import charges
from observatory_assets.defs.collection.answers import ACTOR, record_answers
from observatory_assets.defs.collection.arenas.registry import collect_arena, is_arena
from observatory_assets.defs.collection.fetcher import (
    FetchOutcome,
    PolledSource,
    fetch_source,
    payload_key,
)
from observatory_assets.defs.collection.recovery import STALE_AFTER, abandon_cycle_runs
from observatory_assets.defs.collection.stopping import CycleStopped, StopSignal, stop_on_signal
from observatory_assets.lib.statuses import CollectionRunStatus
from resources.object_store import ObjectStore
from resources.outbound import OutboundClient

#: A claimed source is due again after this, when a cycle that died holding it is found stale.
CLAIM_LEASE = STALE_AFTER
EXPECTED_ITEMS_WITHOUT_HISTORY = 100
NO_DESIGN = "(no design)"
#: How often, at most, the fetching loop looks whether the cycle was told to stop (seconds).
STOP_CHECK_S = 0.2


@dataclass
class DesignRun:
    """The collection run a cycle plans for one query design (``design_id`` None: sources in no design)."""

    design_id: int | None
    design: str
    sources: list[PolledSource]
    estimate: Decimal = Decimal(0)
    run_id: int | None = None


@dataclass
class CycleReport:
    """What one cycle did, for the job's metadata, the CLI and the demo."""

    due: int = 0
    requests_sent: int = 0
    not_modified: int = 0
    changed: int = 0
    errors: int = 0
    items_collected: int = 0
    runs: dict[str, int] = field(default_factory=dict)
    moved: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    deferred_hosts: list[str] = field(default_factory=list)
    shortfalls: list[str] = field(default_factory=list)
    abandoned: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


_DUE = """
SELECT id, name, url, type, etag, last_modified, error_count, next_check_at
  FROM sources
 WHERE active AND url IS NOT NULL AND catalog_file IS NOT NULL
   AND (CAST(:force AS boolean) OR next_check_at IS NULL OR next_check_at <= :now)
 ORDER BY next_check_at NULLS FIRST, id
"""


def _as_source(row) -> PolledSource:
    return PolledSource(
        row.id, row.name, row.url, row.type, row.etag, row.last_modified, row.error_count, row.next_check_at
    )


def hosts_waiting(conn: Connection, now: datetime) -> dict[str, datetime]:
    """Hosts that asked (``Retry-After``) not to be asked again before a moment still to come."""
    rows = conn.execute(
        text("SELECT host, retry_after_until FROM polling_hosts WHERE retry_after_until > :now"), {"now": now}
    )
    return dict(rows.all())


def due_sources(
    conn: Connection, now: datetime, force: bool = False, lock: bool = False
) -> tuple[list[PolledSource], set[str]]:
    """The catalog sources due at ``now`` (all active ones with ``force``), hosts under ``Retry-After`` left
    out even then; and those hosts."""
    statement = text(_DUE + (" FOR UPDATE SKIP LOCKED" if lock else ""))
    waiting = hosts_waiting(conn, now)
    sources = [_as_source(row) for row in conn.execute(statement, {"force": force, "now": now})]
    return [s for s in sources if s.host not in waiting], {s.host for s in sources if s.host in waiting}


def plan_runs(conn: Connection, sources: list[PolledSource]) -> list[DesignRun]:
    """One planned run per query design of ``sources`` (and one for those in no design), each with its
    estimated cost."""
    by_id = {source.id: source for source in sources}
    rows = conn.execute(
        text(
            """
            WITH due AS (SELECT unnest(CAST(:ids AS bigint[])) AS id),
            expected AS (
                SELECT due.id,
                       coalesce((SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY recent.items)
                                   FROM (SELECT f.items FROM source_fetches f
                                          WHERE f.source_id = due.id AND f.items IS NOT NULL
                                          ORDER BY f.fetched_at DESC LIMIT 10) recent), :default) AS items
                  FROM due
            )
            SELECT s.id AS source_id, d.id AS design_id, coalesce(d.name, :none) AS design,
                   (s.cost_per_request + s.cost_per_1k_items * e.items / 1000)
                   / greatest(count(d.id) OVER (PARTITION BY s.id), 1) AS share
              FROM due JOIN sources s ON s.id = due.id JOIN expected e ON e.id = due.id
              LEFT JOIN query_design_sources q ON q.source_id = s.id
              LEFT JOIN query_designs d ON d.id = q.query_design_id
             ORDER BY design, s.id
            """
        ),
        {"ids": list(by_id), "default": EXPECTED_ITEMS_WITHOUT_HISTORY, "none": NO_DESIGN},
    ).all()
    plans: dict[str, DesignRun] = {}
    for row in rows:
        plan = plans.setdefault(row.design, DesignRun(row.design_id, row.design, []))
        plan.sources.append(by_id[row.source_id])
        plan.estimate += Decimal(str(row.share)).quantize(Decimal("0.0001"))
    return list(plans.values())


def _claim_and_reserve(
    engine: Engine, now: datetime, force: bool, poll_run_id: str | None, report: CycleReport
) -> list[DesignRun]:
    """Claim the due sources, create one running run per funded design and reserve its estimate; a design
    short of credits gets no run, and its sources (unless another design funds them) stay due."""
    with engine.begin() as conn:
        sources, deferred = due_sources(conn, now, force, lock=True)
        report.deferred_hosts = sorted(deferred)
        report.due = len(sources)
        funded: list[DesignRun] = []
        for plan in plan_runs(conn, sources):
            plan.run_id = conn.execute(
                text(
                    """
                    INSERT INTO collection_runs (query_design_id, status, started_at, payloads, credits_estimated,
                                                 poll_run_id)
                    VALUES (:design, :running, clock_timestamp(), CAST(:payloads AS jsonb), :estimate, :poll_run)
                    RETURNING id
                    """
                ),
                {
                    "design": plan.design_id,
                    "running": CollectionRunStatus.RUNNING,
                    "payloads": json.dumps(
                        [{"name": s.name, "fmt": s.fmt, "path": None, "url": s.url} for s in plan.sources]
                    ),
                    "estimate": plan.estimate,
                    "poll_run": poll_run_id,
                },
            ).scalar_one()
            shortfall = charges.reserve_run(conn, plan.design_id, plan.run_id, plan.estimate)
            if shortfall is None:
                funded.append(plan)
                continue
            conn.execute(text("DELETE FROM collection_runs WHERE id = :id"), {"id": plan.run_id})
            report.shortfalls.append(f"design {plan.design} is short of {shortfall} credits (estimate {plan.estimate})")
            charges.note_shortfall(conn, ACTOR, plan.design_id, plan.design, plan.estimate, shortfall)
        claimed = sorted({s.id for plan in funded for s in plan.sources})
        conn.execute(
            text("UPDATE sources SET next_check_at = :until WHERE id = ANY(CAST(:ids AS bigint[]))"),
            {"until": now + CLAIM_LEASE, "ids": claimed},
        )
    return funded


def _interleaved_by_host(sources: list[PolledSource]) -> list[PolledSource]:
    """Round-robin over hosts, so the workers spread over hosts instead of queueing on one."""
    by_host: dict[str, list[PolledSource]] = defaultdict(list)
    for source in sources:
        by_host[source.host].append(source)
    return [s for group in zip_longest(*by_host.values()) for s in group if s is not None]


def _fetch_all(
    client: OutboundClient,
    store: ObjectStore,
    keys: dict[int, str],
    sources: list[PolledSource],
    per_host: int,
    workers: int,
    now: datetime,
    stop: StopSignal,
) -> list[FetchOutcome] | None:
    """Every source fetched once, at most ``per_host`` requests at a time per host; a host that answers
    with ``Retry-After`` is not asked again in this cycle. None once ``stop`` is set: no fetch starts after
    it and those in flight are abandoned (their daemon threads end at their own deadline, unheard)."""
    limits: dict[str, threading.Semaphore] = defaultdict(lambda: threading.Semaphore(per_host))
    backed_off: dict[str, datetime] = {}
    pending: queue.SimpleQueue[PolledSource] = queue.SimpleQueue()
    for source in _interleaved_by_host(sources):
        pending.put(source)
    outcomes: list[FetchOutcome] = []
    crashed: list[BaseException] = []  # a bug in a fetch, raised in the cycle's thread as a pool would
    answered = threading.Condition()

    def check(source: PolledSource) -> FetchOutcome | None:
        with limits[source.host]:
            if stop.is_set():
                return None
            if source.host in backed_off:
                return FetchOutcome(
                    source, None, error="host asked to wait (Retry-After)", retry_after=backed_off[source.host],
                    requested=False,
                )  # fmt: skip
            fetch = collect_arena if is_arena(source.fmt) else fetch_source
            outcome = fetch(client, store, source, keys[source.id], now)
            if outcome.retry_after is not None:
                backed_off[source.host] = outcome.retry_after
            return outcome

    def work() -> None:
        while not stop.is_set():
            try:
                source = pending.get_nowait()
            except queue.Empty:
                return
            try:
                outcome = check(source)
            except BaseException as error:
                with answered:
                    crashed.append(error)
                    answered.notify()
                return
            with answered:
                if outcome is not None:
                    outcomes.append(outcome)
                answered.notify()

    for number in range(max(1, min(workers, len(sources)))):
        threading.Thread(target=work, name=f"poll-fetch-{number}", daemon=True).start()
    with answered:
        while len(outcomes) < len(sources) and not stop.is_set() and not crashed:
            answered.wait(STOP_CHECK_S)  # the signal handler runs in this thread: it is looked for this often
    if crashed:
        raise crashed[0]
    return None if stop.is_set() else outcomes


def _finish_runs(
    conn: Connection, plans: list[DesignRun], outcomes: list[FetchOutcome], owner: dict[int, int], report: CycleReport
) -> None:
    """Complete each run with its changed payloads; settle what its requests cost."""
    by_source = {o.source.id: o for o in outcomes}
    by_name = {o.source.name: o.source.id for o in outcomes}
    designs_of: dict[int, int] = defaultdict(int)
    for plan in plans:
        for source in plan.sources:
            designs_of[source.id] += 1
    costs = dict(
        (row.id, (Decimal(row.cost_per_request), Decimal(row.cost_per_1k_items)))
        for row in conn.execute(
            text("SELECT id, cost_per_request, cost_per_1k_items FROM sources WHERE id = ANY(CAST(:ids AS bigint[]))"),
            {"ids": list(by_source)},
        )
    )
    for plan in plans:
        manifest = [
            {
                "name": o.source.name,
                "fmt": o.source.fmt,
                "path": None,
                "url": o.source.url,
                "key": o.key,
                "records": o.records,
                "sha256": o.sha256,
            }
            for s in plan.sources
            if (o := by_source[s.id]).changed and owner[s.id] == plan.run_id
        ]
        request_cost = sum(
            (costs[s.id][0] / designs_of[s.id] for s in plan.sources if by_source[s.id].requested), Decimal(0)
        ).quantize(Decimal("0.0001"))
        if manifest:
            conn.execute(
                text(
                    """
                    UPDATE collection_runs
                       SET status = :completed, completed_at = clock_timestamp(), attempt = attempt + 1,
                           payload_prefix = :prefix, payloads = CAST(:manifest AS jsonb),
                           items_collected = :collected
                     WHERE id = :id
                    """
                ),
                {
                    "id": plan.run_id,
                    "completed": CollectionRunStatus.COMPLETED,
                    "prefix": f"collection_runs/{plan.run_id}/",
                    "manifest": json.dumps(manifest),
                    "collected": sum(m["records"] for m in manifest),
                },
            )
            per_1k = {m["name"]: costs[by_name[m["name"]]][1] / designs_of[by_name[m["name"]]] for m in manifest}
            charges.record_cost_basis(conn, plan.run_id, request_cost, per_1k)
            report.runs[plan.design] = plan.run_id
            report.items_collected += sum(m["records"] for m in manifest)
        elif request_cost > 0 or (plan.design_id is not None and plan.estimate > 0):
            conn.execute(
                text(
                    """
                    UPDATE collection_runs
                       SET status = :completed, completed_at = clock_timestamp(), ingested_at = clock_timestamp(),
                           attempt = attempt + 1, payloads = '[]'
                     WHERE id = :id
                    """
                ),
                {"id": plan.run_id, "completed": CollectionRunStatus.COMPLETED},
            )
            charges.settle_run(conn, plan.run_id, request_cost)
        else:
            conn.execute(text("DELETE FROM collection_runs WHERE id = :id"), {"id": plan.run_id})


def run_cycle(
    engine: Engine,
    store: ObjectStore,
    client: OutboundClient,
    *,
    force: bool = False,
    per_host: int = 2,
    workers: int = 32,
    now: datetime | None = None,
    poll_run_id: str | None = None,
) -> CycleReport:
    """One polling cycle (see the module docstring); ``force`` treats every active source as due (never a
    host's ``Retry-After``); ``poll_run_id``: the Dagster run it runs in, recorded on its collection runs
    (the polling sensor takes them for dead once that run is no longer in progress). SIGTERM or SIGINT
    stops it (:mod:`.stopping`): :class:`CycleStopped`, its sources given back to the next cycle unless
    their answers were already recorded."""
    now = now or datetime.now(UTC)
    report = CycleReport()
    with stop_on_signal() as stop:
        plans = _claim_and_reserve(engine, now, force, poll_run_id, report)
        owner: dict[int, int] = {}
        for plan in sorted(plans, key=lambda p: (p.design_id is None, p.design)):
            for source in plan.sources:
                owner.setdefault(source.id, plan.run_id)
        sources = {s.id: s for plan in plans for s in plan.sources}
        keys = {
            source_id: payload_key(f"collection_runs/{owner[source_id]}/", position, sources[source_id])
            for position, source_id in enumerate(sorted(sources))
        }
        outcomes = _fetch_all(client, store, keys, list(sources.values()), per_host, workers, now, stop)
        if outcomes is None:
            abandon_cycle_runs(engine, [plan.run_id for plan in plans], f"stopped by {stop.reason}")
            raise CycleStopped(f"polling stopped by {stop.reason}: {len(sources)} sources left to the next cycle")
        _record_cycle(engine, plans, outcomes, owner, now, report)
    if stop.is_set():
        raise CycleStopped(f"polling stopped by {stop.reason} once the cycle's answers were recorded")
    return report


def _record_cycle(
    engine: Engine,
    plans: list[DesignRun],
    outcomes: list[FetchOutcome],
    owner: dict[int, int],
    now: datetime,
    report: CycleReport,
) -> None:
    """Record the cycle's answers and finish its runs, unless they were recovered as stale meanwhile."""
    report.requests_sent = sum(o.requested for o in outcomes)
    report.not_modified = sum(o.not_modified for o in outcomes)
    report.changed = sum(o.changed for o in outcomes)
    report.errors = sum(o.error is not None for o in outcomes)
    with engine.begin() as conn:
        if not _still_running(conn, [plan.run_id for plan in plans]):
            report.abandoned = True  # taken for dead and recovered meanwhile: the next cycle has its sources
            return
        if outcomes:
            moved, gone = record_answers(conn, outcomes, owner, now)
            report.moved, report.gone = moved, gone
        _finish_runs(conn, plans, outcomes, owner, report)


def _still_running(conn: Connection, run_ids: list[int]) -> bool:
    """Whether every run of the cycle is still ``running``, locked until the cycle's answers are recorded
    (a cycle that outlived its lease was recovered as stale: its answers are dropped, never recorded twice)."""
    running = conn.execute(
        text("SELECT id FROM collection_runs WHERE id = ANY(CAST(:ids AS bigint[])) AND status = :running FOR UPDATE"),
        {"ids": run_ids, "running": CollectionRunStatus.RUNNING},
    ).all()
    return len(running) == len(run_ids)
