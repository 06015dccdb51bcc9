"""The ClickHouse archive: DDL migrations, backends (chdb / server), rows, archiver, history.

    backend = open_archive(settings)          # chdb in data_dir, or APS_CLICKHOUSE_URL
    migrate(backend)                          # infra/clickhouse/NNN_*.sql, idempotent
    run_archiver(settings, bootstrap, stop)   # Kafka -> ClickHouse until `stop` is set
"""

from streams.archive.archiver import (
    GROUP_ID,
    Archiver,
    ArchiverProgress,
    archived_topics,
    run_archiver,
)
from streams.archive.backends import (
    ArchiveBackend,
    ArchiveError,
    ArchiveLockedError,
    ArchiveMissingError,
    ChdbBackend,
    QueryResult,
    ServerBackend,
    open_archive,
)
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
    "Archiver",
    "ArchiverProgress",
    "ChdbBackend",
    "KafkaMessage",
    "MigrationError",
    "QueryResult",
    "ServerBackend",
    "TableSpec",
    "archive_row",
    "archived_topics",
    "migrate",
    "open_archive",
    "run_archiver",
]
