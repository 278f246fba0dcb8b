"""The production docker-compose stack: `docker-compose config` (Debian's docker-compose; no engine
runs here) with and without its secrets, and its two scripts run for real: the SeaweedFS start
script with the same SeaweedFS release as the pinned image, the application role's SQL against
the embedded PostgreSQL."""

import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml

from resources.embedded import database_url_in
from resources.settings import as_libpq_dsn
from tests.support.helpers import ROOT, create_database, drop_database
from tests.support.roles import create_app_role
from tests.support.s3 import GRPC_OFFSET, SeaweedS3, weed_binary

SECRETS = {
    "POSTGRES_PASSWORD": "owner-example",
    "APP_DB_PASSWORD": "app-example",
    "S3_ACCESS_KEY": "observatory",
    "S3_SECRET_KEY": "example-secret-0123456789",
    "PSEUDONYM_KEY": "example-pseudonym-key-0123",
}
APP_SERVICES = ("code-location", "webserver", "daemon")


def compose_config(env: dict[str, str], *options: str) -> subprocess.CompletedProcess:
    assert shutil.which("docker-compose"), "docker-compose is installed by .ci/run"
    return subprocess.run(["docker-compose", "-f", "docker-compose.yml", *options, "config"], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture(scope="module")
def config() -> dict:
    done = compose_config(SECRETS)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_docker_compose_config_parses_and_has_every_service(config):
    services = config["services"]
    assert set(services) == {
        "postgres",
        "seaweedfs",
        "migrate",
        "code-location",
        "webserver",
        "daemon",
        "redis",
        "worker",
    }
    assert services["postgres"]["image"].startswith("pgvector/pgvector")
    assert "alembic upgrade head" in " ".join(services["migrate"]["command"])
    assert all("healthcheck" in services[s] for s in ("postgres", "seaweedfs", "code-location", "webserver"))
    assert services["code-location"]["depends_on"]["seaweedfs"]["condition"] == "service_healthy"


def test_s3_is_seaweedfs_at_a_pinned_release_and_no_minio_is_left(config):
    image = config["services"]["seaweedfs"]["image"]
    assert re.fullmatch(r"chrislusf/seaweedfs:4\.\d+", image), image  # a release, never `latest`
    assert all("minio" not in s.get("image", "") for s in config["services"].values())
    assert "minio/" not in (ROOT / "docker-compose.yml").read_text()
    health = " ".join(config["services"]["seaweedfs"]["healthcheck"]["test"])
    assert "/healthz" in health and "/buckets/observatory/" in health  # S3 up and the bucket made
    assert all(s["environment"]["OBSERVATORY_S3_ENDPOINT"] == "seaweedfs:8333" for n, s in config["services"].items()
               if n in APP_SERVICES)  # fmt: skip


def _published(service: dict) -> list[tuple[str, str]]:
    """(host ip, host port) of every published port, in compose v1's short or v2's long form."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), str(port.get("published", ""))))
        else:
            parts = str(port).split(":")
            out.append((parts[0] if len(parts) == 3 else "", parts[-2] if len(parts) >= 2 else ""))
    return out


def test_ports_are_published_on_loopback_only(config):
    published = {name: _published(s) for name, s in config["services"].items() if s.get("ports")}
    assert published == {"webserver": [("127.0.0.1", "3000")], "seaweedfs": [("127.0.0.1", "8333")],
                         "redis": [("127.0.0.1", "6379")]}  # fmt: skip


def test_the_application_connects_as_a_role_without_ddl_and_migrations_as_the_owner(config):
    services = config["services"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["OBSERVATORY_DATABASE_URL"].startswith("postgresql://observatory_app:app-example@"), name
        assert env["OBSERVATORY_DAGSTER_DATABASE_URL"].startswith("postgresql+psycopg2://observatory_app:"), name
        assert env["OBSERVATORY_DAGSTER_DB_USER"] == "observatory_app", name
        assert "owner-example" not in yaml.safe_dump(services[name]), name  # no owner password at all
    migrate = services["migrate"]
    assert migrate["environment"]["OBSERVATORY_DATABASE_URL"].startswith("postgresql://observatory:owner-example@")
    assert migrate["environment"]["OBSERVATORY_DAGSTER_DB_USER"] == "observatory"
    assert "create-app-role.sql" in " ".join(migrate["command"])
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "docker/create-app-role.sql" in dockerfile
    assert "postgresql-client-18" in dockerfile and "apt.postgresql.org" in dockerfile  # pg_dump matching pg18


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_the_stack_refuses_to_start_without_each_secret(missing):
    done = compose_config({k: v for k, v in SECRETS.items() if k != missing})
    assert done.returncode != 0 and missing in done.stderr, done.stderr


def test_secrets_have_no_defaults():
    text = (ROOT / "docker-compose.yml").read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses and all(u.startswith(":?") for u in uses), (name, uses)


def test_production_dagster_yaml_queues_runs_in_postgres(monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    instance = yaml.safe_load((ROOT / "docker" / "dagster.yaml").read_text())
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert instance["concurrency"]["pools"]["default_limit"] == 2  # the observatory_ingest pool
    monkeypatch.setenv("OBSERVATORY_DAGSTER_DB_USER", "observatory_app")
    monkeypatch.setenv("OBSERVATORY_DAGSTER_DB_PASSWORD", "app-example")
    with tempfile.TemporaryDirectory() as home:  # Dagster itself accepts the file (limits in one place only)
        (Path(home) / "dagster.yaml").write_text(yaml.safe_dump(instance))
        dagster_instance_config(home)
    db = instance["storage"]["postgres"]["postgres_db"]
    assert db["username"] == {"env": "OBSERVATORY_DAGSTER_DB_USER"}
    assert db["password"] == {"env": "OBSERVATORY_DAGSTER_DB_PASSWORD"}


class ComposeSeaweed(SeaweedS3):
    """docker/seaweedfs-start.sh, the compose service's entrypoint, run with the wheel's `weed`
    (the image's release) on free loopback ports; its keys come only through S3_* variables."""

    def command(self) -> list[str]:
        args = ["sh", str(ROOT / "docker" / "seaweedfs-start.sh"), "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.localSocket={self.root}/s3.sock"]  # fmt: skip
        for component, port in self.ports.items():
            args += [f"-{component}.port={port}", f"-{component}.port.grpc={port + GRPC_OFFSET}"]
        return args

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in super().environment().items() if not k.startswith("AWS_")}
        env.update(PATH=f"{Path(weed_binary()).parent}:/usr/bin:/bin", S3_ACCESS_KEY=self.access_key,
                   S3_SECRET_KEY=self.secret_key, S3_BUCKET=self.bucket, SEAWEEDFS_DATA_DIR=str(self.data_dir),
                   SEAWEEDFS_S3_CONFIG=str(self.root / "s3.json"))  # fmt: skip
        return env


def test_the_seaweedfs_start_script_requires_keys_and_creates_the_bucket():
    import io
    import urllib.request

    from minio.error import S3Error

    from resources.object_store import S3ObjectStore

    with ComposeSeaweed(bucket="observatory") as server:  # start() waits for a signed listing of the bucket
        assert (server.root / "s3.json").stat().st_mode & 0o077 == 0  # the rendered keys: owner only
        store = S3ObjectStore(server.client(), server.bucket)  # what the application does
        stored = store.put_stream("exports/x/items.csv", io.BytesIO(b"a,b\n" * 5_000_000))  # multipart
        with urllib.request.urlopen(store.download_url(stored.key), timeout=10) as response:
            assert len(response.read()) == stored.size == 20_000_000
        for keys, codes in [({"secret_key": "wrong-secret-0123456789"}, {"SignatureDoesNotMatch", "AccessDenied"}),
                            ({"access_key": "", "secret_key": ""}, {"AccessDenied"})]:  # fmt: skip
            with pytest.raises(S3Error) as refused:
                list(server.client(**keys).list_objects(server.bucket))
            assert refused.value.code in codes
        with pytest.raises(S3Error, match="AccessDenied"):  # the identity is confined to its bucket
            server.client().make_bucket("another-bucket")


@pytest.mark.parametrize("env", [{}, {"S3_ACCESS_KEY": "k"}, {"S3_ACCESS_KEY": "k", "S3_SECRET_KEY": "short"}])
def test_the_seaweedfs_start_script_refuses_to_start_without_good_keys(env, tmp_path):
    done = subprocess.run(["sh", str(ROOT / "docker" / "seaweedfs-start.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "SEAWEEDFS_DATA_DIR": str(tmp_path), **env}, timeout=30)  # fmt: skip
    assert done.returncode != 0 and "S3_" in done.stderr, done.stderr


def test_the_app_role_reads_and_writes_but_cannot_change_the_schema(pg_server):
    suffix = uuid.uuid4().hex[:8]
    app_db, dagster_db, template_db, role = f"app_{suffix}", f"dagster_{suffix}", f"tmpl_{suffix}", f"app_role_{suffix}"
    owner_url = create_database(pg_server, app_db)
    dagster_url = create_database(pg_server, dagster_db)
    create_database(pg_server, template_db)
    with psycopg.connect(as_libpq_dsn(owner_url), autocommit=True) as conn:  # "migrations" before the role exists
        conn.execute("CREATE TABLE items (id bigserial PRIMARY KEY, title text)")
    try:
        for _ in range(2):  # idempotent: the migrate service runs it on every start
            create_app_role(owner_url, role, "app-secret", dagster_db, template_db)
        with psycopg.connect(as_libpq_dsn(owner_url), autocommit=True) as conn:  # a later migration
            conn.execute("CREATE TABLE later (id bigserial PRIMARY KEY)")

        def as_app(url: str):
            dsn = psycopg.conninfo.make_conninfo(as_libpq_dsn(url), user=role, password="app-secret")
            return psycopg.connect(dsn, autocommit=True)

        with as_app(owner_url) as app:
            app.execute("INSERT INTO items (title) VALUES ('x')")
            app.execute("UPDATE items SET title = 'y'")
            app.execute("INSERT INTO later DEFAULT VALUES")  # default privileges cover new tables
            assert app.execute("SELECT count(*) FROM items").fetchone() == (1,)
            app.execute("CREATE TEMP TABLE staged (n int)")  # the loaders stage in temp tables
            for ddl in ("CREATE TABLE evil (n int)", "ALTER TABLE items ADD COLUMN evil int", "DROP TABLE items",
                        "CREATE INDEX ON items (title)"):  # fmt: skip
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    app.execute(ddl)
            app.execute("DELETE FROM items")
        with as_app(dagster_url) as app, pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("CREATE TABLE evil (n int)")
        with psycopg.connect(as_libpq_dsn(database_url_in(pg_server, template_db)), autocommit=True) as conn:
            assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() == (1,)
    finally:
        for name in (app_db, dagster_db, template_db):
            drop_database(pg_server, name)
        with psycopg.connect(as_libpq_dsn(pg_server), autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_the_scale_profile_adds_a_pinned_redis_and_workers_that_scale():
    done = compose_config({**SECRETS, "REDIS_PASSWORD": "redis-example", "OBSERVATORY_EXECUTOR": "celery"},
                          "--profile", "scale")  # fmt: skip
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    redis, worker = services["redis"], services["worker"]
    assert re.fullmatch(r"redis:7\.\d+\.\d+-alpine", redis["image"]), redis["image"]
    assert redis["profiles"] == worker["profiles"] == ["scale"]
    assert all("profiles" not in services[name] for name in ("postgres", "migrate", *APP_SERVICES))
    assert worker["command"][:7] == [
        "dagster-celery",
        "worker",
        "start",
        "-A",
        "dagster_celery.app",
        "-y",
        "celery.yaml",
    ]
    assert worker["command"][7:] == ["-q", "ingest,enrich,default"]
    assert "ports" not in worker and "container_name" not in worker  # so `--scale worker=4` works
    assert worker["environment"]["OBSERVATORY_EXECUTOR"] == "celery"
    for name in ("worker", *APP_SERVICES):
        env = services[name]["environment"]
        assert env["OBSERVATORY_CELERY_BROKER"] == "redis://:redis-example@redis:6379/0", name
        assert env["OBSERVATORY_CELERY_BACKEND"] == "redis://:redis-example@redis:6379/1", name
    assert services["daemon"]["environment"]["OBSERVATORY_EXECUTOR"] == "celery"  # the runs it launches
    assert "redis-example" not in " ".join(redis["entrypoint"] + redis["healthcheck"]["test"])
    assert "celery.yaml" in (ROOT / "docker" / "Dockerfile").read_text()
    assert '".[scale]"' in (ROOT / "docker" / "Dockerfile").read_text()


def test_the_redis_start_script_requires_a_password(tmp_path):
    import redis

    from tests.support.celery import RedisServer

    script = str(ROOT / "docker" / "redis-start.sh")
    refused = subprocess.run(["sh", script], env={"PATH": "/usr/bin:/bin", "REDIS_DATA_DIR": str(tmp_path)},
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    assert refused.returncode != 0 and "REDIS_PASSWORD" in refused.stderr
    server = RedisServer(tmp_path).start()  # the same script, on a free loopback port
    try:
        with (
            pytest.raises(redis.exceptions.AuthenticationError),
            redis.Redis(host="127.0.0.1", port=server.port) as anonymous,
        ):
            anonymous.ping()
        with redis.Redis.from_url(server.url(0)) as client:  # closed here, not by the garbage collector
            assert client.ping()
        listening = {c.laddr.ip for c in psutil_connections(server.port)}
        assert listening == {"127.0.0.1"}
        assert not any(server.password in line for line in command_lines())  # never on a command line
    finally:
        server.stop()


def psutil_connections(port: int):
    import psutil

    return [c for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port and c.status == "LISTEN"]


def command_lines():
    import psutil

    for process in psutil.process_iter():
        try:
            yield " ".join(process.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
