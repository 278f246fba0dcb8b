"""The `observatory` command: in this process through Click's runner (help, completion, usage mistakes, the
commands against a real database and Dagster instance), and end to end as subprocesses with the real
`dagster` CLI, the Dagster instance in Postgres."""

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import dagster as dg
import pytest
import yaml
from sqlalchemy import text

from observatory_assets.cli import observatory
from tests.support.cli import invoke, one_line_error
from tests.support.helpers import ROOT, run, write


@pytest.fixture
def instance_of(monkeypatch):
    """Opens the Dagster instance the subprocesses used (the DAGSTER_HOME of their environment)."""

    def open_instance(env) -> dg.DagsterInstance:
        monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
        return dg.DagsterInstance.get()

    return open_instance


def test_collect_then_dagster_asset_materialize_records_the_run_in_postgres(dagster_env, tmp_path, instance_of):
    payload = write(
        tmp_path / "in.jsonl",
        '{"id": "1", "title": "Hello", "published_at": "2026-11-01T10:00:00Z"}\n'
        '{"id": "1", "title": "Hello again"}\nnot json\n',
    )
    run_id = run(dagster_env, "observatory", "collect", "--file", str(payload), "--source", "cli-test").strip()
    assert run_id.isdigit()

    run(
        dagster_env,
        "dagster",
        "asset",
        "materialize",
        "-m",
        "observatory_assets.definitions",
        "--select",
        "raw_items",
        "--partition",
        run_id,
    )

    with instance_of(dagster_env) as instance:
        assert "postgres" in type(instance.run_storage).__module__
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": run_id}))
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
        materialization = instance.get_latest_materialization_event(dg.AssetKey("raw_items"))
        metadata = materialization.asset_materialization.metadata
        assert (metadata["loaded"].value, metadata["duplicates"].value, metadata["rejected"].value) == (1, 1, 1)

    status = json.loads(run(dagster_env, "observatory", "status", "--json"))
    assert status["runs"][0]["id"] == int(run_id)
    assert {k: status["runs"][0][k] for k in ("status", "delivered", "loaded", "duplicates", "rejected")} == {
        "status": "completed", "delivered": 3, "loaded": 1, "duplicates": 1, "rejected": 1,
    }  # fmt: skip
    assert status["totals"]["accounted_for"] is True


def test_observatory_ingest_runs_waiting_collection_runs_through_dagster(dagster_env, tmp_path, instance_of):
    for name in ("a", "b"):
        payload = write(tmp_path / f"{name}.jsonl", '{"id": "%s", "title": "Item %s"}\n' % (name, name))
        run(dagster_env, "observatory", "collect", "--file", str(payload), "--source", name)
    out = run(dagster_env, "observatory", "ingest")
    assert out.count(": ok") == 2
    assert "no completed collection runs waiting" in run(dagster_env, "observatory", "ingest")
    with instance_of(dagster_env) as instance:
        assert len(instance.get_runs(filters=dg.RunsFilter(job_name="ingest_collection_run"))) == 2


def test_cli_reports_errors_without_a_traceback(dagster_env, tmp_path):
    done = subprocess.run(
        ["observatory", "collect", "--file", str(tmp_path / "missing.csv"), "--source", "x"],
        cwd=ROOT,
        env=dagster_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and "missing.csv" in done.stderr


def test_the_secret_in_a_database_url_is_masked(dagster_env):
    from resources.settings import mask_dsn

    masked = mask_dsn("postgresql://observatory:s3cr3t@db.example:5432/observatory")
    assert "s3cr3t" not in masked and "***" in masked
    assert "s3cr3t" not in yaml.safe_dump({"shown": masked})


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's words under ``group`` (groups included), depth first."""
    found = []
    for name, command in group.commands.items():
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
    return found


def test_every_command_has_a_help_that_names_its_options():
    top = invoke("--help")
    assert top.exit_code == 0 and "What Dagster itself does not do" in top.stdout
    listed = [line.split()[0] for line in top.stdout.split("Commands:")[1].splitlines() if line.strip()]
    assert listed[:3] == ["services", "env", "migrate"] and "webhooks" in listed  # the first steps first
    commands = _commands(observatory)
    assert ("sources", "set-credibility") in commands and ("takedown", "request") in commands
    for words in commands:
        shown = invoke(*words, "--help")
        assert shown.exit_code == 0 and f"Usage: observatory {' '.join(words)}" in shown.stdout, words
        listing = shown.stdout.split("Commands:")[1] if "Commands:" in shown.stdout else ""
        assert not any(line.endswith("...") for line in listing.splitlines()), words  # no summary cut short
    assert (
        "--limit N" in invoke("events", "--help").stdout and "[default: 20; x>=1]" in invoke("events", "--help").stdout
    )


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("nope",), ("observatory: no such command 'nope'", "`observatory --help`")),
        (("credits",), ("observatory credits: a command is missing", "`observatory credits --help`")),
        (("collect", "--source", "s", "--format", "xml", "--file", "f.xml"), ("'--format'", "'xml'", "'rss'")),
        (("collect", "--source", "s"), ("give exactly one of --file or --url",)),
        (("audit", "--since", "2026-13-01"), ("observatory audit:", "'--since'", "not a date (YYYY-MM-DD)")),
        (
            ("publish", "--date", "yesterday"),
            (
                "'--date'",
                "not a date",
            ),
        ),
        (("trends", "explain", "x", "--at", "soon"), ("'--at'", "not a date")),
        (("events", "--limit", "0"), ("'--limit'", "0")),
        (("export", "items", "--run", "one"), ("'--run'", "'one' is not a valid integer")),
        (
            ("takedown", "request", "--item", "1", "--url", "u", "--reason", "r", "--requested-by", "me"),
            ("exactly one of --item, --url or --event",),
        ),
        (("status", "--jsn"), ("no such option '--jsn'", "'--json'")),
    ],
)
def test_a_usage_mistake_is_one_line_and_exit_2_before_anything_starts(args, fragments):
    line = one_line_error(invoke(*args))
    assert line.endswith("--help`)"), line
    for fragment in fragments:
        assert fragment in line, line


def test_bash_completion_completes_commands_options_and_choices():
    def complete(line: str) -> list[str]:
        words = line.split(" ")
        env = {"_OBSERVATORY_COMPLETE": "bash_complete", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
        done = invoke(env=env)
        assert done.exit_code == 0, done.output
        return [entry.split(",", 1)[1] for entry in done.stdout.splitlines()]

    assert complete("observatory cre") == ["credits"]
    assert set(complete("observatory credits ")) == {"allocate", "balance", "history"}
    assert complete("observatory collect --format ") == ["rss", "atom", "jsonl", "csv"]
    assert "--json" in complete("observatory status --")


def test_the_installed_command_prints_its_bash_completion_script():
    env = {**os.environ, "_OBSERVATORY_COMPLETE": "bash_source"}
    command = str(Path(sys.executable).parent / "observatory")
    done = subprocess.run([command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "complete -o nosort -F _observatory_completion observatory" in done.stdout


def test_in_process_collect_status_ingest_and_events(dagster_env, tmp_path, engine, instance_of):
    payload = write(tmp_path / "in.jsonl", '{"id": "1", "title": "Hello"}\n{"id": "2", "title": "Hi"}\nnot json\n')
    collected = invoke("collect", "--file", str(payload), "--source", "in-process", env=dagster_env)
    assert collected.exit_code == 0 and collected.stdout.strip().isdigit(), collected.output
    run_id = int(collected.stdout)
    status = json.loads(invoke("status", "--json", env=dagster_env).stdout)
    assert [(r["id"], r["delivered"], r["ingested"]) for r in status["runs"]] == [(run_id, 3, False)]

    with engine.begin() as conn:  # the sensor gave up on it; a person asking to ingest still gets it
        conn.execute(text("UPDATE collection_runs SET ingest_abandoned_at = now() WHERE id = :id"), {"id": run_id})
    ingested = invoke("ingest", env=dagster_env)
    assert ingested.exit_code == 0 and f"collection run {run_id}: ok" in ingested.stdout, ingested.output
    assert "no completed collection runs waiting" in invoke("ingest", env=dagster_env).stdout
    table = invoke("status", env=dagster_env).stdout.splitlines()
    assert table[1].split() == [str(run_id), "completed", "3", "2", "0", "1"] and table[2].split()[0] == "all"
    with instance_of(dagster_env) as instance:
        assert len(instance.get_runs(filters=dg.RunsFilter(job_name="ingest_collection_run"))) == 1
    assert invoke("events", "--limit", "5", env=dagster_env).stdout.startswith("  event  items sources")


def test_an_unreachable_database_in_process(dagster_env):
    env = {**dagster_env, "OBSERVATORY_DATABASE_URL": "postgresql://someone:pw-4711@127.0.0.1:1/observatory"}
    line = one_line_error(invoke("status", env=env), code=1)
    assert "database is unreachable" in line and "pw-4711" not in line
