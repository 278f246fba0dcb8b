"""``observatory backup list|restore|verify``."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from sqlalchemy import Engine, text

from observatory_assets.cli.runner import engine_and_store
from observatory_assets.defs.operations.backups import BACKUP_PREFIX
from observatory_assets.defs.operations.restore import restore_backup, verify_backup
from resources.object_store import ObjectStore
from resources.settings import mask_dsn

# --- CLI ---------------------------------------------------------------------------------------------------


def _cli_context() -> tuple[Engine, ObjectStore, str]:

    engine, store = engine_and_store()
    return engine, store, engine.url.render_as_string(hide_password=False)


def cmd_backup_list(args: argparse.Namespace) -> int:
    engine, store, _ = _cli_context()
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT object_key, status, size_bytes, sha256, started_at, verified_at, error FROM backups "
                 "ORDER BY started_at DESC, id DESC")
        ).mappings().all()  # fmt: skip
    known = {r["object_key"] for r in rows}
    listing = [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()} for r in rows]
    listing += [{"object_key": k, "status": "not in database (see its .json sidecar)"}
                for k in store.list(BACKUP_PREFIX) if k.endswith(".dump") and k not in known]  # fmt: skip
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    for r in listing:
        size = f"{r['size_bytes'] / 1e6:9.1f} MB" if r.get("size_bytes") else " " * 12
        verified = f"verified {r['verified_at'][:16]}" if r.get("verified_at") else ""
        print(f"{r['object_key']:58} {r['status']:10} {size} {verified}")
    return 0


def cmd_backup_restore(args: argparse.Namespace) -> int:
    engine, store, url = _cli_context()
    target_url = restore_backup(engine, store, url, args.key, args.target_db, args.force)
    print(f"restored {args.key} into {mask_dsn(target_url)}")
    return 0


def cmd_backup_verify(args: argparse.Namespace) -> int:
    engine, store, url = _cli_context()
    result = verify_backup(engine, store, url, args.key)
    print(f"verified {result.key}: {result.tables} tables, {result.rows} rows, counts and checksums match "
          f"({result.seconds:.1f} s)")  # fmt: skip
    return 0


def register_commands(subparsers) -> None:
    """``observatory backup list | restore KEY [--target-db NAME] [--force] | verify KEY``."""
    backup = subparsers.add_parser("backup", help="list, restore or verify database backups")
    actions = backup.add_subparsers(dest="backup_command", required=True)
    listing = actions.add_parser("list", help="backups, newest first")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_backup_list)
    restore = actions.add_parser("restore", help="restore a backup (checked against its SHA-256) into a database")
    restore.add_argument("key", help="object key, e.g. postgres/2026/11/21/observatory_20261121_013000.dump")
    restore.add_argument("--target-db", help="database to restore into (default: the live database)")
    restore.add_argument("--force", action="store_true", help="replace the target database if it exists")
    restore.set_defaults(func=cmd_backup_restore)
    verify = actions.add_parser("verify", help="restore into a scratch database and compare counts and checksums")
    verify.add_argument("key")
    verify.set_defaults(func=cmd_backup_verify)
