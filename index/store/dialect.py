"""What differs between the two databases the store runs on: opening the engine, and how writers
are serialised.

SQLite (a file, or memory): WAL journal, foreign keys on, a busy timeout, and one writer at a time
per process behind a lock shared by every store opened on the same file, each write transaction
opened with ``BEGIN IMMEDIATE``. PostgreSQL (a ``postgresql+psycopg://`` URL): writes to one
collection are serialised by a transaction-scoped advisory lock.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import NoSuchModuleError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from common.errors import InvalidInput, MissingDependency

_SQLITE_BUSY_MS = 30_000
_ADVISORY_NS = 0x61747464  # "attd": namespace of our PostgreSQL advisory locks

_sqlite_locks: dict[str, threading.Lock] = {}
_sqlite_locks_guard = threading.Lock()


def sqlite_write_lock(key: str) -> threading.Lock:
    """One lock per database file per process, shared by every Store opened on that file."""
    with _sqlite_locks_guard:
        return _sqlite_locks.setdefault(key, threading.Lock())


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    """Per new SQLite connection: WAL, foreign keys, busy timeout, and no implicit BEGIN."""
    # Let SQLAlchemy's "begin" event issue BEGIN (pysqlite's implicit one is deferred and late).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_on_begin(conn: Any) -> None:
    """``BEGIN`` in the mode the connection asks for (``IMMEDIATE`` on the write engine)."""
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def open_engine(url: str) -> tuple[Engine, str, bool]:
    """An engine for ``url``, its dialect name, and whether it is an in-memory SQLite database."""
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser()}"
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        kwargs: dict[str, Any] = {
            "connect_args": {"check_same_thread": False, "timeout": _SQLITE_BUSY_MS / 1000}
        }
        memory = not u.database or u.database == ":memory:" or "mode=memory" in str(u)
        if memory:
            kwargs["poolclass"] = StaticPool
        else:
            Path(u.database or "").expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine, "sqlite", memory
    if backend == "postgresql":
        if u.drivername == "postgresql":
            u = u.set(drivername="postgresql+psycopg")
        try:
            return create_engine(u, pool_pre_ping=True), "postgresql", False
        except (ImportError, NoSuchModuleError) as exc:
            raise MissingDependency(
                "psycopg[binary]", extra="postgres", feature="a PostgreSQL store"
            ) from exc
    raise InvalidInput(
        f"unsupported database URL {u.render_as_string(hide_password=True)!r}: use sqlite or postgresql"
    )


def advisory_xact_lock(s: Session, key: int) -> None:
    """Wait for PostgreSQL's advisory lock on ``key`` (in our namespace), held until the
    transaction of ``s`` ends."""
    s.execute(
        text("SELECT pg_advisory_xact_lock(:ns, :key)"),
        {"ns": _ADVISORY_NS, "key": key % 2**31},
    )
