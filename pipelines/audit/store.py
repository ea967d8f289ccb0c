"""One ``Store`` interface over the audit database, two implementations.

``ServerStore`` talks to a ClickHouse server with clickhouse-driver (native protocol), from a URL
``clickhouse://user:password@host:port/database``. ``EmbeddedStore`` runs current ClickHouse
in-process with chdb on a folder. Both take parameters the same way: ``%(name)s`` placeholders,
substituted client-side with clickhouse-driver's own escaping, because the Debian 18.16 server
has no server-side ``{name:Type}`` parameters. Without ``params`` a query is sent verbatim (a
literal ``%`` needs no doubling); with ``params`` write ``%%``.

Results come back as ``Result(columns, types, rows)`` with the same Python types from both
backends (``Date`` -> ``datetime.date``, NaN floats -> ``None``). Transient failures (server down,
network, timeouts, overload) raise ``StoreUnavailable``, which the sink retries; every other
server error raises ``StoreError`` carrying the server's first line.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import json
import math
import re
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.config import ClickHouseSettings, redact
from pipelines.errors import UserError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# ClickHouse error codes that mean "try again later", not "the query is wrong".
TRANSIENT_CODES = frozenset({
    159,  # TIMEOUT_EXCEEDED
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS
    279,  # ALL_CONNECTION_TRIES_FAILED
    319,  # UNKNOWN_STATUS_OF_INSERT
    425,  # SYSTEM_ERROR
})

READ_STATEMENTS = ("select", "with", "show", "describe", "desc", "exists", "explain")


class StoreError(Exception):
    """A query the server rejected (syntax, unknown table, readonly violation, ...)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class StoreUnavailable(StoreError):
    """The store cannot be reached or is overloaded right now; retrying later may succeed."""


@dataclasses.dataclass(frozen=True)
class Result:
    columns: list[str]
    types: list[str]
    rows: list[tuple]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None


def check_identifier(name: str, what: str = "identifier") -> str:
    if not IDENTIFIER.match(name or ""):
        raise UserError(f"invalid {what} {name!r}: use letters, digits and underscores")
    return name


def substitute(sql: str, params: Mapping[str, Any] | None) -> str:
    """``sql`` with ``%(name)s`` placeholders replaced by escaped literals (clickhouse-driver's escaping)."""
    if not params:
        return sql
    from clickhouse_driver.util.escape import escape_param

    escaped = {}
    for key, value in params.items():
        if isinstance(value, float) and not math.isfinite(value):
            escaped[key] = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        elif isinstance(value, bool):
            escaped[key] = "1" if value else "0"
        elif isinstance(value, (bytes, bytearray)):
            raise UserError(f"parameter {key}: bytes are not supported; pass a string")
        elif isinstance(value, datetime.datetime):
            escaped[key] = value.strftime("'%Y-%m-%d %H:%M:%S'")
        else:
            escaped[key] = escape_param(value, None)
    try:
        return sql % escaped
    except KeyError as exc:
        raise UserError(f"query uses parameter {exc.args[0]!r}, which was not given") from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot substitute parameters ({exc}); write a literal % as %%") from None


def parse_version(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in re.findall(r"\d+", text)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def first_keyword(sql: str) -> str:
    """The statement's first keyword, after comments and parentheses."""
    text = re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.S).lstrip(" \t\r\n(")
    match = re.match(r"[A-Za-z]+", text)
    return match.group(0).lower() if match else ""


def check_read_only(sql: str) -> None:
    """Reject anything but one read statement (SELECT/WITH/SHOW/DESCRIBE/EXISTS/EXPLAIN)."""
    keyword = first_keyword(sql)
    if keyword not in READ_STATEMENTS:
        raise UserError(f"audit query is read-only: {keyword.upper() or 'an empty statement'} is not allowed")
    stripped = re.sub(r"'(?:[^'\\]|\\.)*'", "''", sql)  # ignore ';' inside string literals
    if ";" in stripped.rstrip().rstrip(";"):
        raise UserError("audit query takes one statement")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_clean(v) for v in value)
    return value


class Store(abc.ABC):
    """The audit database on a ClickHouse server or in the embedded chdb store."""

    database: str
    kind: str

    @abc.abstractmethod
    def version(self) -> tuple[int, int, int]:
        """The ClickHouse version as (major, minor, patch)."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns nothing (DDL)."""

    @abc.abstractmethod
    def query(self, sql: str, params: Mapping[str, Any] | None = None, *, readonly: bool = False) -> Result:
        """Run a read query; ``readonly`` enforces read-only execution on the server side."""

    @abc.abstractmethod
    def insert(self, table: str, columns: Mapping[str, Sequence[Any]], *, dedup_token: str | None = None) -> int:
        """Insert one columnar block into ``database.table``; returns the row count."""

    @abc.abstractmethod
    def create_database(self, on_cluster: str | None = None) -> None:
        """CREATE DATABASE IF NOT EXISTS for ``self.database``."""

    def close(self) -> None:  # noqa: B027 - optional
        pass

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ capabilities

    @property
    def supports_ttl(self) -> bool:
        """Table TTL on MergeTree: ClickHouse 19.6+."""
        return self.version() >= (19, 6, 0)

    @property
    def supports_dedup_window(self) -> bool:
        """non_replicated_deduplication_window (table setting): 21.5+."""
        return self.version() >= (21, 5, 0)

    @property
    def supports_dedup_token(self) -> bool:
        """insert_deduplication_token (insert setting): 22.2+."""
        return self.version() >= (22, 2, 0)

    def table(self, name: str) -> str:
        return f"{self.database}.{name}"

    def has_table(self, name: str) -> bool:
        """Whether table ``name`` exists in the database (a store migrated before it was added has not)."""
        return bool(int(self.query(f"EXISTS TABLE {self.table(name)}").scalar()))

    def count(self, table: str, final: bool = True) -> int:
        return int(self.query(f"SELECT count() FROM {self.table(table)}{' FINAL' if final else ''}").scalar())


# ---------------------------------------------------------------------- server


class ServerStore(Store):
    """A ClickHouse server over the native protocol (clickhouse-driver)."""

    kind = "server"

    def __init__(self, host: str = "127.0.0.1", port: int = 9000, *, user: str = "default", password: str = "",
                 database: str = "backstop", connect_timeout: float = 3.0, send_receive_timeout: float = 30.0,
                 secure: bool = False) -> None:
        self.host, self.port, self.user, self.password = host, port, user, password
        self.database = check_identifier(database, "database name")
        self._kwargs = dict(host=host, port=port, user=user, password=password, connect_timeout=connect_timeout,
                            send_receive_timeout=send_receive_timeout, secure=secure)
        self._client = None
        self._version: tuple[int, int, int] | None = None
        self._lock = threading.RLock()  # one query at a time on the connection

    @classmethod
    def from_url(cls, url: str, settings: ClickHouseSettings | None = None) -> ServerStore:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("clickhouse", "clickhouses") or not parsed.hostname:
            raise UserError(f"ClickHouse URL {redact(url)!r}: expected clickhouse://user:password@host:port/database")
        settings = settings or ClickHouseSettings()
        query = urllib.parse.parse_qs(parsed.query)
        database = parsed.path.lstrip("/") or settings.database
        return cls(parsed.hostname, parsed.port or (9440 if parsed.scheme == "clickhouses" else 9000),
                   user=urllib.parse.unquote(parsed.username) if parsed.username else settings.user,
                   password=urllib.parse.unquote(parsed.password) if parsed.password else settings.password,
                   database=database, secure=parsed.scheme == "clickhouses",
                   connect_timeout=float(query.get("connect_timeout", ["3"])[0]))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _new_client(self, database: str) -> Any:
        from clickhouse_driver import Client

        return Client(database=database, **self._kwargs)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._new_client(self.database)
        return self._client

    def _run(self, sql: str, data: Any = None, *, settings: Mapping[str, Any] | None = None,
             columnar: bool = False, with_types: bool = False, client: Any = None) -> Any:
        with self._lock:
            return self._run_locked(sql, data, settings=settings, columnar=columnar, with_types=with_types,
                                    client=client)

    def _run_locked(self, sql: str, data: Any = None, *, settings: Mapping[str, Any] | None = None,
                    columnar: bool = False, with_types: bool = False, client: Any = None) -> Any:
        from clickhouse_driver import errors

        client = client or self.client
        try:
            if data is not None:
                return client.execute(sql, data, columnar=columnar, settings=dict(settings or {}), types_check=False)
            return client.execute(sql, settings=dict(settings or {}), with_column_types=with_types)
        except errors.ServerException as exc:
            message = f"ClickHouse {self.address}: " + str(exc.message).strip().splitlines()[0]
            if exc.code in TRANSIENT_CODES:
                client.disconnect()
                raise StoreUnavailable(message, exc.code) from None
            if exc.code == 81:  # UNKNOWN_DATABASE
                client.disconnect()
                raise StoreError(f"{message} (run `backstop audit migrate` first)", exc.code) from None
            raise StoreError(message, exc.code) from None
        except (errors.NetworkError, errors.SocketTimeoutError, errors.UnexpectedPacketFromServerError,
                OSError, EOFError) as exc:
            client.disconnect()
            reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise StoreUnavailable(f"ClickHouse {self.address} unavailable: {reason}") from None
        except errors.Error as exc:
            client.disconnect()
            raise StoreError(f"ClickHouse {self.address}: {str(exc).splitlines()[0]}") from None

    def version(self) -> tuple[int, int, int]:
        if self._version is None:
            admin = self._new_client("default")
            try:
                text = self._run("SELECT version()", client=admin)[0][0]
            finally:
                admin.disconnect()
            self._version = parse_version(text)
        return self._version

    def create_database(self, on_cluster: str | None = None) -> None:
        admin = self._new_client("default")
        cluster = f" ON CLUSTER {check_identifier(on_cluster, 'cluster name')}" if on_cluster else ""
        try:
            self._run(f"CREATE DATABASE IF NOT EXISTS {self.database}{cluster}", client=admin)
        finally:
            admin.disconnect()

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._run(substitute(sql, params))

    def query(self, sql: str, params: Mapping[str, Any] | None = None, *, readonly: bool = False) -> Result:
        settings = {"readonly": 1} if readonly else None
        rows, types = self._run(substitute(sql, params), settings=settings, with_types=True)
        return Result([name for name, _ in types], [t for _, t in types], [_clean(tuple(r)) for r in rows])

    def insert(self, table: str, columns: Mapping[str, Sequence[Any]], *, dedup_token: str | None = None) -> int:
        names = list(columns)
        settings = {}
        if dedup_token and self.supports_dedup_token:
            settings["insert_deduplication_token"] = dedup_token
        self._run(f"INSERT INTO {self.table(table)} ({', '.join(names)}) VALUES",
                  [list(columns[n]) for n in names], settings=settings, columnar=True)
        return len(columns[names[0]]) if names else 0

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client = None


# ---------------------------------------------------------------------- embedded


class _Shared:
    """chdb runs one embedded server per process, on one folder: connections are shared per path."""

    lock = threading.RLock()
    path: str | None = None
    conn: Any = None
    users = 0


class EmbeddedStore(Store):
    """Current ClickHouse in-process (chdb) on a folder. One folder per process (a chdb limit)."""

    kind = "embedded"

    def __init__(self, path: str | Path, database: str = "backstop") -> None:
        self.path = str(Path(path).resolve())
        self.database = check_identifier(database, "database name")
        self._version: tuple[int, int, int] | None = None
        self._readonly_conn: Any = None
        self._closed = False
        with _Shared.lock:
            if _Shared.conn is not None and _Shared.path != self.path:
                raise UserError(f"the embedded store is already open at {_Shared.path} in this process; "
                                f"cannot also open {self.path}")
            if _Shared.conn is None:
                import chdb

                Path(self.path).mkdir(parents=True, exist_ok=True)
                try:
                    _Shared.conn = chdb.connect(self.path)
                except RuntimeError as exc:
                    raise UserError(f"cannot open the embedded store at {self.path}: {exc}") from None
                _Shared.path = self.path
            _Shared.users += 1

    def _query(self, sql: str, fmt: str = "JSONCompact", conn: Any = None) -> Any:
        with _Shared.lock:
            try:
                return (conn or _Shared.conn).query(sql, fmt)
            except Exception as exc:  # noqa: BLE001 - chdb raises RuntimeError / ChdbError
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
                code = re.match(r"Code: (\d+)", text)
                raise StoreError(f"embedded store: {text}", int(code.group(1)) if code else None) from None

    def _use(self) -> None:
        """Make this store's database the default one (the chdb connection is shared across stores)."""
        try:
            self._query(f"USE {self.database}", "CSV")
        except StoreError as exc:
            if exc.code == 81:  # UNKNOWN_DATABASE
                raise StoreError(f"embedded store {self.path}: no database {self.database} "
                                 "(run `backstop audit migrate` first)", 81) from None
            raise

    def version(self) -> tuple[int, int, int]:
        if self._version is None:
            self._version = parse_version(json.loads(self._query("SELECT version()").bytes())["data"][0][0])
        return self._version

    def create_database(self, on_cluster: str | None = None) -> None:
        self._query(f"CREATE DATABASE IF NOT EXISTS {self.database}", "CSV")

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._query(substitute(sql, params), "CSV")

    def _read_only_connection(self) -> Any:
        """A second connection on the same embedded server, in ``readonly=1`` (which it cannot undo)."""
        if self._readonly_conn is None:
            import chdb

            with _Shared.lock:
                conn = chdb.connect(self.path)
                conn.query("SET readonly = 1", "CSV")
                self._readonly_conn = conn
        return self._readonly_conn

    def query(self, sql: str, params: Mapping[str, Any] | None = None, *, readonly: bool = False) -> Result:
        text = substitute(sql, params)
        conn = None
        if readonly:
            check_read_only(text)
            conn = self._read_only_connection()
            try:
                self._query(f"USE {self.database}", "CSV", conn=conn)
            except StoreError as exc:
                if exc.code == 81:
                    raise StoreError(f"embedded store {self.path}: no database {self.database} "
                                     "(run `backstop audit migrate` first)", 81) from None
                raise
        with _Shared.lock:
            if conn is None:
                self._use()
            raw = self._query(text, "JSONCompact", conn=conn).bytes()
        if not raw.strip():
            return Result([], [], [])
        doc = json.loads(raw)
        names = [m["name"] for m in doc["meta"]]
        types = [m["type"] for m in doc["meta"]]
        converters = [_converter(t) for t in types]
        rows = [tuple(conv(v) for conv, v in zip(converters, row)) for row in doc["data"]]
        return Result(names, types, rows)

    def insert(self, table: str, columns: Mapping[str, Sequence[Any]], *, dedup_token: str | None = None) -> int:
        from clickhouse_driver.util.escape import escape_param

        names = list(columns)
        if not names:
            return 0
        count = len(columns[names[0]])
        if count == 0:
            return 0

        def lit(value: Any) -> str:
            if isinstance(value, float) and not math.isfinite(value):
                return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
            if isinstance(value, list):
                return "[" + ", ".join(lit(v) for v in value) + "]"
            if isinstance(value, datetime.datetime):
                return value.strftime("'%Y-%m-%d %H:%M:%S'")
            return str(escape_param(value, None))

        values = ",".join("(" + ",".join(lit(columns[n][i]) for n in names) + ")" for i in range(count))
        settings = f" SETTINGS insert_deduplication_token = {escape_param(dedup_token, None)}" if dedup_token else ""
        self._query(f"INSERT INTO {self.table(table)} ({', '.join(names)}){settings} VALUES {values}", "CSV")
        return count

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _Shared.lock:
            if self._readonly_conn is not None:
                self._readonly_conn.close()
                self._readonly_conn = None
            _Shared.users -= 1
            if _Shared.users <= 0 and _Shared.conn is not None:
                _Shared.conn.close()
                _Shared.conn, _Shared.path, _Shared.users = None, None, 0


def _converter(type_name: str) -> Any:
    inner = type_name
    while inner.startswith(("Nullable(", "LowCardinality(")):
        inner = inner[inner.index("(") + 1:-1]
    if inner == "Date" or inner == "Date32":
        return lambda v: None if v is None else datetime.date.fromisoformat(v)
    if inner.startswith("DateTime"):
        return lambda v: None if v is None else datetime.datetime.fromisoformat(v[:19])
    if inner.startswith(("Int", "UInt")):
        return lambda v: None if v is None else int(v)
    if inner.startswith("Float"):
        return lambda v: None if v is None else float(v)
    return _clean


# ---------------------------------------------------------------------- opening


def open_store(*, url: str | None = None, store_path: str | None = None,
               settings: ClickHouseSettings | None = None, database: str | None = None) -> Store:
    """The store the command line asked for: ``--clickhouse URL``, else ``--store PATH``, else settings."""
    settings = settings or ClickHouseSettings()
    if url and store_path:
        raise UserError("give either --clickhouse URL or --store PATH, not both")
    if url or (not store_path and settings.url):
        store: Store = ServerStore.from_url(url or settings.url, settings)
        if database:
            store.database = check_identifier(database, "database name")
        return store
    return EmbeddedStore(store_path or settings.store, database or settings.database)
