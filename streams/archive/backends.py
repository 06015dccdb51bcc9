"""Where the archive lives: embedded ClickHouse (chdb) or a ClickHouse server.

Both backends speak the same small protocol (`ArchiveBackend`): execute a statement,
insert rows into a table, run a query and get rows with column names and types, close.
Queries take parameters in ClickHouse's own ``{name:Type}`` syntax on both backends.
`open_archive(settings)` picks the backend by URL, like Faust picks a store: embedded
chdb in ``settings.chdb_path`` unless ``APS_CLICKHOUSE_URL`` names a server.

chdb allows one process per data directory (and one data directory per process): a
second process gets a clear `ArchiveLockedError` naming the owner's PID.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from streams.archive.rows import Column
from streams.config import Settings
from streams.errors import InfraError

if TYPE_CHECKING:
    import pyarrow as pa

Params = Mapping[str, Any] | None

# a per-query read-only mode that still allows per-query settings (readonly=1 would not)
READONLY = 2


class ArchiveError(InfraError):
    """The archive could not be opened, written or queried."""


class ArchiveUnavailableError(ArchiveError):
    """ClickHouse did not answer (down, unreachable, overloaded): worth retrying later."""


class ArchiveLockedError(ArchiveError):
    """The embedded archive's data directory is owned by another process."""


class ArchiveMissingError(ArchiveError):
    """There is no archive yet where the settings point."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Rows of a query with their column names and ClickHouse types."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        """Rows as {column: value} dicts."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def scalar(self) -> Any:
        """The single value of a one-row, one-column result."""
        return self.rows[0][0]


class ArchiveBackend(Protocol):
    """What the archiver, the migrations runner and `aps history` need from ClickHouse."""

    kind: str
    location: str

    def execute(self, sql: str, params: Params = None) -> None:
        """Run a statement that returns no rows (DDL, INSERT ... SELECT)."""

    def insert(self, table: str, columns: Sequence[Column],
               rows: Sequence[Sequence[Any]]) -> int:
        """Insert rows (tuples in `columns` order) into `table`; return the row count."""

    def insert_arrow(self, table: str, data: pa.Table) -> int:
        """Insert an Arrow table (columns named and typed as `arrow_schema` makes them)."""

    def query(self, sql: str, params: Params = None, *, readonly: bool = False) -> QueryResult:
        """Run a query; `readonly` refuses anything that would write."""

    def close(self) -> None:
        """Release the connection (and, for chdb, the data directory)."""


def open_archive(settings: Settings, *, create: bool = True) -> ArchiveBackend:
    """The configured archive: a ClickHouse server if `clickhouse_url` is set, else chdb.

    With ``create=False`` a missing archive raises `ArchiveMissingError` instead of creating it.
    """
    if settings.clickhouse_url:
        return ServerBackend(settings.clickhouse_url, create=create)
    return ChdbBackend(settings.chdb_path, create=create)


def quote_identifier(name: str) -> str:
    """A table or column name quoted for ClickHouse."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _insert_head(table: str, columns: Sequence[Column]) -> str:
    return f"INSERT INTO {quote_identifier(table)} ({_names(c.name for c in columns)})"


def _names(names: Iterable[str]) -> str:
    return ", ".join(quote_identifier(name) for name in names)


# --- embedded: chdb ----------------------------------------------------------------------------

class ChdbBackend:
    """Embedded ClickHouse (chdb) in a local data directory."""

    kind = "chdb"

    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        if not create and not self.path.is_dir():
            raise ArchiveMissingError(
                f"no archive at {self.path}: nothing has been archived yet (run `aps run` or "
                "`aps archiver`), or set APS_DATA_DIR / APS_CLICKHOUSE_URL to where it is")
        self.path.mkdir(parents=True, exist_ok=True)
        _refuse_if_locked(self.path)
        self._session = self._open()
        self._readonly_session: Any = None

    def _open(self) -> Any:
        from chdb import session

        try:
            sess = session.Session(str(self.path))
        except RuntimeError as exc:
            _refuse_if_locked(self.path)  # lost a race with another process
            if "already initialized with path" in str(exc):
                raise ArchiveError(
                    f"this process already opened another embedded archive; chdb allows one "
                    f"data directory per process ({exc})") from exc
            raise ArchiveError(f"cannot open the embedded archive at {self.path}: {exc}") from exc
        # typed JSON output: 64-bit integers as numbers, NaN/inf as strings (not null)
        sess.query("SET output_format_json_quote_64bit_integers = 0")
        sess.query("SET output_format_json_quote_denormals = 1")
        return sess

    def execute(self, sql: str, params: Params = None) -> None:
        """Run a statement that returns no rows."""
        self._run(self._session, sql, "CSV", params)

    def insert(self, table: str, columns: Sequence[Column],
               rows: Sequence[Sequence[Any]]) -> int:
        """Insert as one Arrow IPC stream (columnar, typed; measured fastest for chdb)."""
        if not rows:
            return 0
        return self.insert_arrow(table, arrow_table(columns, rows))

    def insert_arrow(self, table: str, data: pa.Table) -> int:
        """Insert an Arrow table as one Arrow IPC stream."""
        if not data.num_rows:
            return 0
        head = f"INSERT INTO {quote_identifier(table)} ({_names(data.column_names)})"
        try:
            with self._session.send_insert(head, "ArrowStream") as ins:
                ins.append(ipc_stream(data))
                ins.finish()
        except Exception as exc:  # chdb raises RuntimeError or its own ChdbError
            raise ArchiveError(f"insert into {table} failed: {exc}") from exc
        return data.num_rows

    def query(self, sql: str, params: Params = None, *, readonly: bool = False) -> QueryResult:
        """Run a query and convert its JSON output by column type."""
        sess = self._readonly() if readonly else self._session
        raw = self._run(sess, sql, "JSONCompact", params)
        text = raw.bytes() if hasattr(raw, "bytes") else str(raw).encode()
        if not text.strip():
            return QueryResult((), (), [])
        doc = json.loads(text)
        names = tuple(m["name"] for m in doc["meta"])
        types = tuple(m["type"] for m in doc["meta"])
        rows = [tuple(convert_json_value(t, v) for t, v in zip(types, row, strict=True))
                for row in doc["data"]]
        return QueryResult(names, types, rows)

    def _readonly(self) -> Any:
        # settings are per session: a second session on the same directory, made read-only
        if self._readonly_session is None:
            sess = self._open()
            sess.query(f"SET readonly = {READONLY}")
            self._readonly_session = sess
        return self._readonly_session

    def _run(self, sess: Any, sql: str, fmt: str, params: Params) -> Any:
        return chdb_query(sess, sql, fmt, params)

    def close(self) -> None:
        """Close both sessions; the data directory is released."""
        for sess in (self._readonly_session, self._session):
            if sess is not None:
                sess.close()
        self._readonly_session = None
        self._session = None


SYNC_QUERY, SYNC_ANSWER = "SELECT 'aps-chdb-sync'", b"aps-chdb-sync\n"


def chdb_query(sess: Any, sql: str, fmt: str, params: Params = None) -> Any:
    """Run `sql` on a chdb session; ArchiveError if it fails.

    chdb 26.9 hands the partial output of a query that failed midway to the *next* query
    of the same session: after a failure the session is read until it answers a marker
    query with the marker, so no later query can receive another one's result.
    """
    try:
        return sess.query(sql, fmt, params=dict(params) if params else None)
    except Exception as exc:  # chdb raises RuntimeError or its own ChdbError
        _resync(sess)
        raise ArchiveError(f"chdb: {exc}") from exc


def _resync(sess: Any, attempts: int = 3) -> None:
    for _ in range(attempts):
        try:
            if bytes(sess.query(SYNC_QUERY, "TSVRaw").bytes()) == SYNC_ANSWER:
                return
        except Exception:  # a failing marker query is read past like the rest
            continue
    raise ArchiveError("chdb session out of step (a failed query left output behind)")


def local_session(path: str | Path | None = None) -> Any:
    """A chdb session for work that needs no archive of its own (decoding, parsing SQL).

    chdb lets a process use one data directory: the session opens `path` if given, else
    memory, or the directory this process's chdb already uses.
    """
    from chdb import session

    target = str(path) if path is not None else ":memory:"
    try:
        return session.Session(target)
    except RuntimeError as exc:
        match = re.search(r"already initialized with path '([^']*)'", str(exc))
        if path is None and match:
            return session.Session(match.group(1))
        raise ArchiveError(f"cannot open chdb ({exc})") from exc


def _refuse_if_locked(path: Path) -> None:
    """Raise ArchiveLockedError if another process holds chdb's lock on `path`/status."""
    status = path / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise
            pid = _owner_pid(status)
            if pid == os.getpid():
                return  # this process owns it: sessions on the same directory share it
            owner = f"process {pid}" if pid else "another process"
            raise ArchiveLockedError(
                f"the embedded archive {path} is in use by {owner} (an `aps run` or "
                f"`aps archiver` still running?). chdb lets one process own its data directory: "
                f"wait for that process to finish (or stop it), or run the pipeline against a "
                f"ClickHouse server (APS_CLICKHOUSE_URL=clickhouse://...) to query while it "
                f"runs") from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _owner_pid(status: Path) -> int | None:
    """PID written by ClickHouse into its status file ("PID: 1234")."""
    try:
        match = re.search(r"^PID:\s*(\d+)", status.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


# --- Arrow for chdb inserts ----------------------------------------------------------------

def arrow_schema(columns: Sequence[Column]) -> pa.Schema:
    """The Arrow schema of a table's columns: types matching the ClickHouse columns."""
    import pyarrow as pa

    return pa.schema([pa.field(c.name, _arrow_type(c.type)) for c in columns])


def arrow_table(columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> pa.Table:
    """Rows (tuples in `columns` order) as an Arrow table of `arrow_schema(columns)`."""
    import pyarrow as pa

    schema = arrow_schema(columns)
    if not rows:
        return schema.empty_table()
    data = list(zip(*rows, strict=True))
    return pa.Table.from_arrays(
        [pa.array(values, type=field.type) for values, field in zip(data, schema, strict=True)],
        schema=schema)


def ipc_stream(data: pa.Table) -> bytes:
    """An Arrow table as Arrow IPC stream bytes."""
    import pyarrow.ipc as ipc

    sink = io.BytesIO()
    with ipc.new_stream(sink, data.schema) as writer:
        writer.write_table(data)
    return sink.getvalue()



_ARROW_SCALARS = {
    "String": "string", "Int8": "int8", "Int16": "int16", "Int32": "int32", "Int64": "int64",
    "UInt8": "uint8", "UInt16": "uint16", "UInt32": "uint32", "UInt64": "uint64",
    "Float32": "float32", "Float64": "float64",
}


def _arrow_type(clickhouse_type: str) -> Any:
    import pyarrow as pa

    inner = _unwrap(clickhouse_type, "Nullable")
    if inner.startswith("Array("):
        return pa.list_(_arrow_type(inner[len("Array("):-1]))
    if inner.startswith("DateTime") and not inner.startswith("DateTime64"):
        return pa.uint32()  # seconds since the epoch, as ClickHouse stores DateTime
    try:
        return getattr(pa, _ARROW_SCALARS[inner])()
    except KeyError:
        raise ArchiveError(f"no Arrow mapping for ClickHouse type {clickhouse_type}") from None


def _unwrap(type_: str, wrapper: str) -> str:
    head = wrapper + "("
    return type_[len(head):-1] if type_.startswith(head) else type_


# --- JSON output of chdb -> Python values like clickhouse-driver's ----------------------------

def convert_json_value(clickhouse_type: str, value: Any) -> Any:
    """A JSONCompact value as the Python value clickhouse-driver would return for its type."""
    if value is None:
        return None
    type_ = _unwrap(_unwrap(clickhouse_type, "LowCardinality"), "Nullable")
    type_ = _unwrap(type_, "LowCardinality")
    if type_.startswith("Array("):
        return [convert_json_value(type_[len("Array("):-1], item) for item in value]
    if type_.startswith("DateTime"):
        return _datetime(type_, value)
    if type_ == "Date" or type_ == "Date32":
        return dt.date.fromisoformat(value)
    if re.fullmatch(r"U?Int\d+", type_):
        return int(value)
    if type_.startswith("Float"):
        return float(value)  # "nan", "inf", "-inf" as strings
    return value


def _datetime(type_: str, text: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(text)
    if "'" in type_:  # DateTime('UTC'), DateTime64(3, 'UTC'): zoned like the driver returns
        from zoneinfo import ZoneInfo

        return parsed.replace(tzinfo=ZoneInfo(type_.split("'")[1]))
    return parsed


# --- server: clickhouse-driver -------------------------------------------------------------------

_PARAM = re.compile(r"\{(\w+):[^{}]+\}")
UNKNOWN_DATABASE = 81
# server error codes of a server that is there but cannot serve now: timeout, too many
# queries, no free connection, socket timeout, network error, memory limit, too many parts,
# all connection tries failed
TRANSIENT_CODES = frozenset({159, 202, 203, 209, 210, 241, 252, 279})


class ServerBackend:
    """A ClickHouse server over the native protocol (clickhouse-driver).

    One connection: use one backend per thread.
    """

    kind = "server"

    def __init__(self, url: str, *, create: bool = True) -> None:
        from clickhouse_driver import Client

        self.url = url
        self.location = _mask(url)
        self._client = Client.from_url(url)
        self.database: str = self._client.connection.database
        try:
            self._client.execute("SELECT 1")
        except Exception as exc:
            if getattr(exc, "code", None) != UNKNOWN_DATABASE:
                raise ArchiveUnavailableError(
                    f"cannot reach ClickHouse at {self.location}: {exc}") from exc
            if not create:
                raise ArchiveMissingError(
                    f"database {self.database!r} does not exist on {self.location}: nothing "
                    "has been archived there yet") from exc
            self._create_database()

    def _create_database(self) -> None:
        from clickhouse_driver import Client

        parts = urlsplit(self.url)
        admin = Client.from_url(urlunsplit(parts._replace(path="/default")))
        try:
            admin.execute(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(self.database)}")
        finally:
            admin.disconnect()

    def execute(self, sql: str, params: Params = None) -> None:
        """Run a statement that returns no rows."""
        self._call(_driver_sql(sql, params), params or None)

    def insert(self, table: str, columns: Sequence[Column],
               rows: Sequence[Sequence[Any]]) -> int:
        """Native columnar insert (one block per call)."""
        if not rows:
            return 0
        data = [list(values) for values in zip(*rows, strict=True)]
        self._call(_insert_head(table, columns) + " VALUES", data, columnar=True)
        return len(rows)

    def insert_arrow(self, table: str, data: pa.Table) -> int:
        """Native columnar insert of an Arrow table (one block per call)."""
        if not data.num_rows:
            return 0
        head = f"INSERT INTO {quote_identifier(table)} ({_names(data.column_names)}) VALUES"
        self._call(head, [column.to_pylist() for column in data.columns], columnar=True)
        return data.num_rows

    def query(self, sql: str, params: Params = None, *, readonly: bool = False) -> QueryResult:
        """Run a query; values come back as Python types (DateTime('UTC') zoned)."""
        settings = {"readonly": READONLY} if readonly else None
        rows, meta = self._call(_driver_sql(sql, params), params or None, with_column_types=True,
                                settings=settings)
        return QueryResult(tuple(m[0] for m in meta), tuple(m[1] for m in meta),
                           [tuple(row) for row in rows])

    def _call(self, sql: str, params: Any, **kwargs: Any) -> Any:
        from clickhouse_driver.errors import NetworkError, SocketTimeoutError

        try:
            return self._client.execute(sql, params, **kwargs)
        except Exception as exc:  # driver errors carry the server's message
            message = str(exc).split("Stack trace:", 1)[0].strip()  # old servers append one
            unavailable = (isinstance(exc, NetworkError | SocketTimeoutError | EOFError | OSError)
                           or getattr(exc, "code", None) in TRANSIENT_CODES)
            error = ArchiveUnavailableError if unavailable else ArchiveError
            raise error(f"ClickHouse {self.location}: {message or type(exc).__name__}") from exc

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()


def _driver_sql(sql: str, params: Params) -> str:
    """``{name:Type}`` placeholders -> clickhouse-driver's client-side ``%(name)s``."""
    if not params:
        return sql
    return _PARAM.sub(lambda m: f"%({m.group(1)})s", sql.replace("%", "%%"))


def _mask(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:****@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
