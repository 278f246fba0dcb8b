"""``observatory backup list | restore | verify``."""

from __future__ import annotations

import json

import click

from observatory_assets.cli.context import Observatory, json_option, pass_observatory
from observatory_assets.defs.operations.backups import BACKUP_PREFIX, backup_rows
from observatory_assets.defs.operations.restore import restore_backup, verify_backup
from resources.settings import mask_dsn


def _live_url(obs: Observatory) -> str:
    """The live database's URL, with its password (for pg_restore; never shown)."""
    return obs.engine.url.render_as_string(hide_password=False)


@click.group("backup")
def backup() -> None:
    """List, restore or verify database backups."""


@backup.command("list")
@json_option("a JSON list of backups")
@pass_observatory
def list_backups(obs: Observatory, as_json: bool) -> int:
    """Backups, newest first.

    With the dumps in object storage that the database does not know (their .json sidecar tells)."""
    with obs.engine.connect() as conn:
        listing = backup_rows(conn)
    known = {r["object_key"] for r in listing}
    listing += [{"object_key": k, "status": "not in database (see its .json sidecar)"}
                for k in obs.store.list(BACKUP_PREFIX) if k.endswith(".dump") and k not in known]  # fmt: skip
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return 0
    for r in listing:
        size = f"{r['size_bytes'] / 1e6:9.1f} MB" if r.get("size_bytes") else " " * 12
        verified = f"verified {r['verified_at'][:16]}" if r.get("verified_at") else ""
        click.echo(f"{r['object_key']:58} {r['status']:10} {size} {verified}")
    return 0


@backup.command("restore")
@click.argument("key")
@click.option("--target-db", help="database to restore into (default: the live database)")
@click.option("--force", is_flag=True, help="replace the target database if it exists")
@pass_observatory
def restore(obs: Observatory, key: str, target_db: str | None, force: bool) -> int:
    """Restore a backup (checked against its SHA-256) into a database.

    KEY is the backup's object key, e.g. postgres/2026/11/21/observatory_20261121_013000.dump."""
    target_url = restore_backup(obs.engine, obs.store, _live_url(obs), key, target_db, force)
    click.echo(f"restored {key} into {mask_dsn(target_url)}")
    return 0


@backup.command("verify")
@click.argument("key")
@pass_observatory
def verify(obs: Observatory, key: str) -> int:
    """Restore into a scratch database and compare counts and checksums."""
    result = verify_backup(obs.engine, obs.store, _live_url(obs), key)
    click.echo(f"verified {result.key}: {result.tables} tables, {result.rows} rows, counts and checksums match "
               f"({result.seconds:.1f} s)")  # fmt: skip
    return 0


COMMANDS = (backup,)
