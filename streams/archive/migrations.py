"""Archive DDL migrations: infra/clickhouse/NNN_name.sql, applied in order, recorded once.

Rules for migration files (they must run on ClickHouse 18.16 and on chdb 26.x alike):
statements are separated by a ``;`` at the end of a line, ``--`` comments are allowed, and
every statement is idempotent (``CREATE TABLE IF NOT EXISTS`` ...), so a run interrupted
between a statement and its record is simply re-applied. ClickHouse 18.16 has no ``ADD
COLUMN IF NOT EXISTS``: a plain ``ALTER TABLE t ADD COLUMN c ...`` is written instead, and
the runner skips it when `t` already has a column `c`. An applied file must never change
(its checksum is recorded): add a new file instead.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from streams.archive.backends import ArchiveBackend, ArchiveError
from streams.paths import INFRA_DIR

MIGRATIONS_DIR = INFRA_DIR / "clickhouse"
MIGRATIONS_TABLE = "schema_migrations"

_FILE_NAME = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")
# ALTER TABLE <table> ADD COLUMN <column> ... (18.16 knows no IF NOT EXISTS there)
_ADD_COLUMN = re.compile(r"^ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(?!IF\s)(\w+)\s",
                         re.IGNORECASE)

_CREATE_MIGRATIONS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}
(
    version    String,
    checksum   String,
    applied_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree()
ORDER BY version
"""


class MigrationError(ArchiveError):
    """A migration file is malformed, or an applied one was changed afterwards."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its version (file stem), statements and checksum."""

    version: str
    path: Path
    statements: tuple[str, ...]
    checksum: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration file of `directory`, in version order."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        if not _FILE_NAME.match(path.name):
            raise MigrationError(f"{path.name}: migration files are named NNN_lower_snake.sql")
        text = path.read_text(encoding="utf-8")
        statements = split_statements(text)
        if not statements:
            raise MigrationError(f"{path.name}: no SQL statement")
        checksum = hashlib.sha256(text.encode()).hexdigest()
        migrations.append(Migration(path.stem, path, tuple(statements), checksum))
    numbers = [m.version.split("_", 1)[0] for m in migrations]
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicates:
        raise MigrationError(f"duplicate migration numbers: {', '.join(duplicates)}")
    return migrations


def split_statements(text: str) -> list[str]:
    """SQL statements of a file: comment lines dropped, split at a ``;`` ending a line."""
    statements, current = [], []
    for line in text.splitlines():
        if line.strip().startswith("--"):
            continue
        stripped = line.rstrip()
        if stripped.endswith(";"):
            current.append(stripped[:-1])
            statements.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return [s for s in statements if s]


def applied_migrations(backend: ArchiveBackend) -> dict[str, str]:
    """Version -> checksum of every migration recorded in `backend` ({} if none)."""
    if not table_exists(backend, MIGRATIONS_TABLE):
        return {}
    result = backend.query(
        f"SELECT version, any(checksum) FROM {MIGRATIONS_TABLE} GROUP BY version")
    return {version: checksum for version, checksum in result.rows}


def table_exists(backend: ArchiveBackend, table: str) -> bool:
    """True if `table` exists in the backend's current database."""
    result = backend.query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() "
        "AND name = {table:String}", {"table": table})
    return bool(result.scalar())


def column_exists(backend: ArchiveBackend, table: str, column: str) -> bool:
    """True if `table` of the backend's current database has a column `column`."""
    result = backend.query(
        "SELECT count() FROM system.columns WHERE database = currentDatabase() "
        "AND table = {table:String} AND name = {column:String}",
        {"table": table, "column": column})
    return bool(result.scalar())


def _column_added(backend: ArchiveBackend, statement: str) -> bool:
    """True if `statement` adds a column that its table already has."""
    match = _ADD_COLUMN.match(statement)
    return match is not None and column_exists(backend, match[1], match[2])


def pending_migrations(backend: ArchiveBackend,
                       directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Migrations not applied yet; refuses if an applied one has changed since."""
    applied = applied_migrations(backend)
    pending = []
    for migration in load_migrations(directory):
        recorded = applied.get(migration.version)
        if recorded is None:
            pending.append(migration)
        elif recorded != migration.checksum:
            raise MigrationError(
                f"migration {migration.version} changed after it was applied to "
                f"{backend.location}; never edit an applied migration, add a new file")
    return pending


def migrate(backend: ArchiveBackend, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations in order; return the versions applied (idempotent)."""
    backend.execute(_CREATE_MIGRATIONS_TABLE)
    done = []
    for migration in pending_migrations(backend, directory):
        for statement in migration.statements:
            if _column_added(backend, statement):
                continue  # applied by a run interrupted before the migration was recorded
            try:
                backend.execute(statement)
            except ArchiveError as exc:
                raise MigrationError(f"migration {migration.version} failed: {exc}") from exc
        backend.execute(
            f"INSERT INTO {MIGRATIONS_TABLE} (version, checksum, applied_at) "
            "SELECT {version:String}, {checksum:String}, now()",
            {"version": migration.version, "checksum": migration.checksum})
        done.append(migration.version)
    return done
