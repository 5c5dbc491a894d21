"""Helpers for the outbox tests: a real PostgreSQL, worker processes.

PostgreSQL is Debian's (``/usr/lib/postgresql/*/bin``), set up by ``initdb``
in a temporary directory and started on 127.0.0.1 on a free port, once per
test session. As root it runs as ``nobody`` (PostgreSQL refuses root). If
the binaries are absent the PostgreSQL tests are skipped, except in CI
(``CI`` set), where that is a failure: .ci/run installs them.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from helpers import unused_port

ROOT = Path(__file__).resolve().parent.parent


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresCluster:
    """A throwaway PostgreSQL server. By default fsync and synchronous
    commits are off (the tests kill workers, never the database);
    *durable* keeps PostgreSQL's defaults (every commit flushed to disk),
    as a production outbox runs and as the benchmarks measure it."""

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin = bin_dir
        self.durable = durable
        self.dir = Path(tempfile.mkdtemp(prefix="asyncmail-pg-"))
        self.port = unused_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "nobody")
            self.dir.chmod(0o700)
            self.as_user = ["runuser", "-u", "nobody", "--"]

    def _run(self, *command: str) -> None:
        subprocess.run(
            [*self.as_user, *command],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        data = self.dir / "data"
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=100"
        if not self.durable:
            options += " -F -c synchronous_commit=off"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        try:
            self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m",
                "immediate", "-w", "stop",
            )  # fmt: skip
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


_clusters: list[PostgresCluster] = []  # the session's one, once started


def postgres_cluster(config: pytest.Config) -> PostgresCluster:
    """The session's PostgreSQL (started on first use)."""
    if not _clusters:
        bin_dir = _binaries()
        if bin_dir is None:
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL's binaries (initdb) are missing in CI")
            pytest.skip("PostgreSQL is not installed (initdb not found)")
        cluster = PostgresCluster(bin_dir)
        cluster.start()
        config.add_cleanup(cluster.stop)
        _clusters.append(cluster)
    return _clusters[0]


def reset_postgres(url: str) -> None:
    """Empty the outbox's tables (each test starts with an empty outbox)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        for table in (
            "asyncmail_outbox",
            "asyncmail_data",
            "asyncmail_results",
            "asyncmail_rate",
        ):
            connection.execute(f"DROP TABLE IF EXISTS {table}")
    from asyncmail import queue

    store = queue._stores.pop(url, None)
    if store is not None:
        store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def outbox_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty outbox, on SQLite and on PostgreSQL."""
    from asyncmail import queue

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'outbox.db'}"
    else:
        url = postgres_cluster(request.config).url
        reset_postgres(url)
    yield url
    store = queue._stores.pop(url, None)
    if store is not None:
        store.close()


def worker_command(url: str, port: int, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "asyncmail",
        "worker",
        "--url",
        url,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *options,
    ]


def start_worker(url: str, port: int, *options: str) -> subprocess.Popen[str]:
    """A worker process, returned once it is running."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(
        worker_command(url, port, *options),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("asyncmail worker"), line + process.stderr.read()
    return process


def stop_worker(process: subprocess.Popen[str], timeout: float = 30) -> str:
    """SIGTERM, then wait for a graceful exit; returns its output."""
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


def kill_worker(process: subprocess.Popen[str]) -> None:
    process.kill()  # SIGKILL: no clean-up at all
    process.communicate(timeout=30)


def wait_until(predicate: object, timeout: float = 40.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the outbox")
        time.sleep(step)


def counts(url: str) -> dict[str, int]:
    """Messages per state, read with the database's own client library."""
    rows: Sequence[tuple[str, int]]
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url) as connection:
            rows = connection.execute(
                "SELECT state, COUNT(*) FROM asyncmail_outbox GROUP BY state"
            ).fetchall()
    else:
        import sqlite3

        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            rows = connection.execute(
                "SELECT state, COUNT(*) FROM asyncmail_outbox GROUP BY state"
            ).fetchall()
        finally:
            connection.close()
    return dict(rows)
