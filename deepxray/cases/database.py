"""Connecting to the case store's database and bringing its schema to the newest migration.

SQLite serves one machine: several ingress replicas and their threads write one file, so it runs in WAL mode
(readers never wait for the writer), waits for a busy file instead of failing, and starts every writing
transaction with BEGIN IMMEDIATE (it takes the write lock before reading, so a transaction that reads, then
writes cannot fail half-way on a lock another writer took in between). PostgreSQL serves a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Whoever migrates first holds this PostgreSQL advisory lock; replicas starting together wait instead of racing.
_MIGRATION_LOCK = 0x64656570  # "deep"
_WRITE = "deepxray_write"


def make_engine(url: str) -> Engine:
    """An engine for `url`; for a SQLite file, its folder is made and the connections set up as above.

    Raises:
        ValueError: An in-memory SQLite database (each connection would see its own).
    """
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    if parsed.database in (None, "", ":memory:") or parsed.database.startswith("file:"):
        raise ValueError(f"the case store needs a SQLite file, not {url!r}")
    Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @sa.event.listens_for(engine, "connect")
    def _set_up(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # the driver opens no transactions of its own: `_begin` does
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get(_WRITE) else "BEGIN")

    return engine


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A transaction that writes (committed at the end, rolled back on an exception)."""
    with engine.connect() as connection:
        connection.execution_options(**{_WRITE: True})
        with connection.begin():
            yield connection


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A transaction that only reads: one consistent snapshot for the queries in it."""
    with engine.connect() as connection, connection.begin():
        yield connection


def alembic_config(url: str | None = None):
    """Alembic's configuration for the case store (no alembic.ini needed): the migrations in the package, and
    `url` for a run that connects by itself (`alembic` commands in tests or by hand)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(engine: Engine) -> None:
    """Bring the database to the newest migration, in one transaction; a database already there is left as is."""
    from alembic import command

    config = alembic_config()
    with writing(engine) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
