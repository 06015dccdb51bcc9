"""The ClickHouse archive: DDL migrations, backends (chdb / server), rows, archiver, history.

    backend = open_archive(settings)          # chdb in data_dir, or APS_CLICKHOUSE_URL
    migrate(backend)                          # infra/clickhouse/NNN_*.sql, idempotent
    run_archiver(settings, bootstrap, stop)   # Kafka -> ClickHouse until `stop` is set

    mapper = open_mapper(backend)             # messages -> one Arrow block per table
    tables = mapper.map(MessageBatch.of(messages), archived_at)

Errors: ArchiveError (ArchiveLockedError, ArchiveMissingError, ArchiveUnavailableError:
ClickHouse down or overloaded, QueryRefusedError: an `aps history sql` query outside the
archive), BrokerUnreachableError.
"""

from streams.archive.archiver import (
    GROUP_ID,
    Archiver,
    ArchiverProgress,
    Backoff,
    BrokerUnreachableError,
    archived_topics,
    run_archiver,
)
from streams.archive.backends import (
    ArchiveBackend,
    ArchiveError,
    ArchiveLockedError,
    ArchiveMissingError,
    ArchiveUnavailableError,
    ChdbBackend,
    QueryResult,
    ServerBackend,
    open_archive,
)
from streams.archive.columnar import ColumnarMapper, MessageBatch, open_mapper
from streams.archive.history import QueryRefusedError
from streams.archive.migrations import MigrationError, migrate
from streams.archive.rows import (
    ALL_TABLES,
    CHANGELOG_SCHEMAS,
    KafkaMessage,
    TableSpec,
    archive_row,
)

__all__ = [
    "ALL_TABLES",
    "CHANGELOG_SCHEMAS",
    "GROUP_ID",
    "ArchiveBackend",
    "ArchiveError",
    "ArchiveLockedError",
    "ArchiveMissingError",
    "ArchiveUnavailableError",
    "Archiver",
    "ArchiverProgress",
    "Backoff",
    "BrokerUnreachableError",
    "ChdbBackend",
    "ColumnarMapper",
    "KafkaMessage",
    "MessageBatch",
    "MigrationError",
    "QueryRefusedError",
    "QueryResult",
    "ServerBackend",
    "TableSpec",
    "archive_row",
    "archived_topics",
    "migrate",
    "open_archive",
    "open_mapper",
    "run_archiver",
]
