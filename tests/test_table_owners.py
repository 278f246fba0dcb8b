"""One owner per table: every table is written (INSERT, UPDATE, DELETE, COPY, TRUNCATE) by the modules of
one domain (``defs/<domain>/``) or by one shared module of ``lib/``, but for the declared exceptions below,
each with its reason (the way import-linter's ``ignore_imports`` declares the deliberate cross-domain
imports). Reading another domain's table is fine; writing it needs a line here. No SQL runs in
``assets.py``, ``jobs.py``, ``definitions.py`` or ``sensors/``: import-linter keeps SQLAlchemy out of them."""

import ast
import re
from collections import defaultdict
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "observatory_assets"

#: A write and its target table; keywords in capitals, as every SQL statement of the project writes them
#: (prose in messages and comments does not count). ``DO UPDATE SET`` (an upsert) is no second target.
WRITE = re.compile(
    r"\b(?:INSERT INTO|DELETE FROM|COPY|TRUNCATE(?: TABLE)?|UPDATE(?! SET\b))\s+(?:ONLY\s+)?([a-z_][a-z0-9_]*)\b"
)
TEMPORARY = re.compile(r"\bCREATE TEMP(?:ORARY)? TABLE\s+(?:IF NOT EXISTS\s+)?([a-z_][a-z0-9_]*)")

#: Tables written by more than one owner, on purpose: {table: ({owners}, reason)}.
DECLARED_EXCEPTIONS: dict[str, tuple[set[str], str]] = {
    "collection_runs": (
        {"ingestion", "collection", "credits"},
        "ingestion creates runs by hand (collect, inbox) and loads them; the poller creates and recovers the runs "
        "it files; the credit ledger writes a run's credit columns (estimate, cost, basis) in the ledger's transaction",
    ),
    "sources": (
        {"ingestion", "collection", "trends"},
        "the catalog (collection) owns sources; ingestion registers an outlet or a hand-collected source on first "
        "sight, and a trend file rates the credibility of the sources it names",
    ),
    "raw_items": (
        {"ingestion", "enrichment"},
        "enrichment writes its own columns (language, text-search configuration and vector, search terms, "
        "sentiment) of the items ingestion loaded, set-based from a staged chunk",
    ),
    "rejected_items": (
        {"ingestion", "operations"},
        "retention points a rejected row at its payload's archived copy when it archives a run's payloads",
    ),
    "trend_evidence": (
        {"trends", "events"},
        "merging two events moves their evidence to the surviving event in the clustering transaction",
    ),
    "webhook_messages": (
        {"webhooks", "lib/outbox"},
        "every domain emits its events into the outbox (lib/outbox.py) in the transaction of the change; the "
        "webhooks domain delivers and prunes them",
    ),
    "audit_log": (
        {"lib/audit", "publishing"},
        "every domain appends to the audit trail through lib/audit.py; publishing's audit retention archives "
        "and deletes old rows",
    ),
}


def _owner(path: Path) -> str | None:
    """The domain (``defs/<domain>/…``) or shared module (``lib/<name>``) a module belongs to."""
    parts = path.relative_to(PACKAGE).parts
    if parts[0] == "defs" and len(parts) > 2:
        return parts[1]
    if parts[0] == "lib":
        return f"lib/{path.stem}"
    return None


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _sql_strings(path: Path) -> list[str]:
    """Every string literal of the module but its docstrings; an f-string's placeholders become ``{}``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    strings = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            strings.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            strings.append(node.value)
    return strings


def table_writers() -> dict[str, set[str]]:
    """Each permanent table written by the domain and lib modules, with the owners that write it."""
    writers: dict[str, set[str]] = defaultdict(set)
    temporary: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        owner = _owner(path)
        if owner is None:
            continue
        for sql in _sql_strings(path):
            temporary |= set(TEMPORARY.findall(sql))
            for table in WRITE.findall(sql):
                writers[table].add(owner)
    return {table: owners for table, owners in writers.items() if table not in temporary}


def test_the_scan_finds_the_writes_it_is_meant_to():
    writers = table_writers()
    assert writers["raw_items"] >= {"ingestion"} and writers["events"] == {"events"}
    assert writers["backups"] == {"operations"} and "staged" not in writers  # a staging table is no table of record
    assert not WRITE.findall("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2")[1:]


def test_every_table_has_one_owner_but_the_declared_exceptions():
    shared = {table: owners for table, owners in table_writers().items() if len(owners) > 1}
    undeclared = {table: sorted(owners) for table, owners in shared.items() if table not in DECLARED_EXCEPTIONS}
    assert not undeclared, f"tables written by more than one domain, undeclared: {undeclared}"
    changed = {
        table: {"declared": sorted(declared), "found": sorted(shared.get(table, ()))}
        for table, (declared, _reason) in DECLARED_EXCEPTIONS.items()
        if shared.get(table) != declared
    }
    assert not changed, f"declared exceptions that no longer match the code: {changed}"


def test_the_architecture_page_names_every_table_and_domain():
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = sorted(table for table in table_writers() if f"`{table}`" not in page)
    assert not missing, f"docs/architecture.md does not say who owns {missing}"
    domains = sorted(p.name for p in (PACKAGE / "defs").iterdir() if (p / "definitions.py").exists())
    assert len(domains) == 11 and all(f"`{domain}`" in page for domain in domains), domains
