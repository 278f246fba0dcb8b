"""Settings in one place: only resources/settings.py reads the environment, a bad value is one line,
`observatory config` says where each value came from, and docs/configuration.md is the model's."""

import os
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from resources.settings import (
    ENVIRONMENT,
    SettingsError,
    configuration_markdown,
    displayed_value,
    is_secret,
    platform_settings,
)
from tests.conftest import ROOT

PACKAGES = ("observatory_assets", "resources", "sensors")


#: The names through which a module reads the environment.
_READERS = frozenset({"environ", "getenv", "environb", "getenvb"})


def _environment_reads(path: Path) -> list[int]:
    """Lines of ``path`` that touch ``os.environ`` or ``getenv`` (in any spelling): ``<x>.environ`` and
    ``from os import environ``. A token scan, not ``ast.parse``: it depends on nothing but the file (the
    AST constructor's depth counter breaks when a finalizer runs inside it, CPython gh-106905)."""
    with path.open("rb") as source:
        kept = (tokenize.NAME, tokenize.OP, tokenize.NEWLINE)
        words = [(t.string, t.start[0]) for t in tokenize.tokenize(source.readline) if t.type in kept]
    lines, importing_from_os = [], False
    for n, (word, line) in enumerate(words):
        if word == "import" and n >= 2 and [w for w, _ in words[n - 2 : n]] == ["from", "os"]:
            importing_from_os = True
        elif word in _READERS and n and (words[n - 1][0] == "." or importing_from_os):
            lines.append(line)
        elif word in ("\n", "\r\n", ""):  # the end of a logical line (NEWLINE) ends the import
            importing_from_os = False
    return lines


def test_only_the_settings_module_reads_the_environment():
    settings_module = ROOT / "resources" / "settings.py"
    readers = {
        f"{path.relative_to(ROOT)}:{line}"
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path != settings_module
        for line in _environment_reads(path)
    }
    assert readers == set()
    assert _environment_reads(settings_module)  # the check does see a read where there is one


def test_the_environment_scan_sees_every_spelling_and_nothing_else(tmp_path):
    module = tmp_path / "module.py"
    module.write_text(
        "import os\nfrom os import (\n    path,\n    getenv as g,\n)\nx = os.environ['A']\n"
        "def f(environ=None):\n    return environ, 'os.environ', path\ny = os . getenvb('B')\n"
    )
    assert _environment_reads(module) == [4, 6, 9]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OBSERVATORY_TAKEDOWN_GRACE_HOURS", "-3"),
        ("OBSERVATORY_TAKEDOWN_GRACE_HOURS", "nan"),
        ("OBSERVATORY_AUDIT_RETENTION_DAYS", "a year"),
        ("OBSERVATORY_AUDIT_RETENTION_DAYS", "-1"),
        ("OBSERVATORY_RETENTION_RAW_ITEMS_MONTHS", "-2"),
        ("OBSERVATORY_RETENTION_COLLECTION_PAYLOADS_MONTHS", "1.5"),
        ("OBSERVATORY_S3_SECURE", "maybe"),
        ("OBSERVATORY_EMBEDDER", "bert"),
        ("OBSERVATORY_PUBLISH_TARGET", "ftp"),
    ],
)
def test_a_bad_value_is_refused_in_one_line_naming_the_variable(variable, value):
    with pytest.raises(SettingsError) as raised:
        platform_settings({variable: value})
    message = str(raised.value)
    assert "\n" not in message and message.startswith(variable) and repr(value) in message


def test_values_are_parsed_and_empty_means_default():
    settings = platform_settings(
        {"OBSERVATORY_TAKEDOWN_GRACE_HOURS": "1.5", "OBSERVATORY_S3_SECURE": "yes", "OBSERVATORY_EMBEDDER": " E5 ",
         "OBSERVATORY_RETENTION_RAW_ITEMS_MONTHS": "24", "OBSERVATORY_DATABASE_URL": "", "OBSERVATORY_HOME": "rel"}
    )  # fmt: skip
    assert (settings.takedown_grace_hours, settings.s3_secure, settings.embedder) == (1.5, True, "e5")
    assert settings.retention_raw_items_months == 24 and settings.embedded_database
    assert settings.home == Path("rel").resolve() and settings.pgdata == settings.home / "pgdata"
    fresh = platform_settings({})
    assert (fresh.publish_target, fresh.audit_retention_days, fresh.ghost_configured) == ("static", 365, False)


def test_secrets_are_never_displayed():
    env = {"OBSERVATORY_PSEUDONYM_KEY": "k" * 20, "OBSERVATORY_DATABASE_URL": "postgresql://u:hunter2@db/app"}
    assert is_secret("OBSERVATORY_PSEUDONYM_KEY") and not is_secret("OBSERVATORY_S3_BUCKET")
    assert displayed_value("OBSERVATORY_PSEUDONYM_KEY", env) == "(set)"
    assert "hunter2" not in displayed_value("OBSERVATORY_DATABASE_URL", env)
    assert displayed_value("OBSERVATORY_S3_ENDPOINT", env) == "(unset)"
    assert repr(platform_settings(env).pseudonym_key) == "SecretStr('**********')"


def _config(cwd: Path, **variables: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVATORY_")}
    env.update(variables, PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    return subprocess.run(["observatory", "config"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_config_shows_each_value_its_source_and_its_meaning(tmp_path):
    (tmp_path / ".env").write_text(
        "OBSERVATORY_S3_BUCKET=from-the-file\nOBSERVATORY_SITE_URL=http://file.invalid/\n"
        "OBSERVATORY_GHOST_ADMIN_KEY=id:never-shown-0815\n"
    )
    done = _config(tmp_path, OBSERVATORY_SITE_URL="http://127.0.0.1:9999/", OBSERVATORY_TAKEDOWN_GRACE_HOURS="5")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split(maxsplit=3)[1:] for line in done.stdout.splitlines()}
    assert set(rows) == set(ENVIRONMENT)
    assert rows["OBSERVATORY_S3_BUCKET"][:2] == ["from-the-file", "file"]
    assert rows["OBSERVATORY_SITE_URL"][:2] == ["http://127.0.0.1:9999/", "env"]  # the environment wins
    assert rows["OBSERVATORY_TAKEDOWN_GRACE_HOURS"][:2] == ["5.0", "env"]
    assert rows["OBSERVATORY_GHOST_ADMIN_KEY"][:2] == ["(set)", "file"]
    assert rows["OBSERVATORY_S3_REGION"][:2] == ["us-east-1", "default"]
    assert rows["OBSERVATORY_S3_REGION"][2] == ENVIRONMENT["OBSERVATORY_S3_REGION"]
    assert "never-shown-0815" not in done.stdout + done.stderr


def test_a_bad_value_in_the_settings_file_is_one_line(tmp_path):
    (tmp_path / ".env").write_text("OBSERVATORY_AUDIT_RETENTION_DAYS=-30\n")
    done = _config(tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr
    assert "OBSERVATORY_AUDIT_RETENTION_DAYS" in lines[0] and "'-30'" in lines[0]


def test_the_configuration_page_is_generated_from_the_model():
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert page == configuration_markdown(), "docs/configuration.md is stale: run `make docs`"
    assert all(f"`{name}`" in page for name in ENVIRONMENT)
