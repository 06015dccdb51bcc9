"""Prometheus metrics of the archiver (served by `aps archiver` on APS_WEB_PORT at /metrics).

The delay is measured per committed batch, on the batch's oldest message: commit wall time
minus that message's Kafka timestamp. It is how far behind the archive is at that moment;
`aps_archive_lag_seconds` keeps the last value between batches.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from streams.errors import InfraError

ARCHIVED_ROWS = Counter("aps_archived_rows_total", "Rows archived (inserted and committed)",
                        ["table"])
BATCHES = Counter("aps_archive_batches_total", "Batches inserted and committed")
DELAY = Histogram(
    "aps_archive_delay_seconds",
    "Age of each committed batch's oldest message at commit (commit time - Kafka timestamp)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0))
LAG_SECONDS = Gauge("aps_archive_lag_seconds",
                    "Age of the oldest message of the last committed batch, at its commit")
LAG_MESSAGES = Gauge("aps_archive_lag_messages",
                     "Messages not archived yet on the assigned partitions (last measured)")
RETRIES = Counter("aps_archive_retries_total",
                  "Insert attempts that failed and were retried (ClickHouse unavailable)")
UNAVAILABLE = Gauge("aps_archive_unavailable_seconds",
                    "How long ClickHouse has been failing inserts (0 when it answers)")


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics on `port` from a daemon thread."""
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        raise InfraError(f"cannot serve metrics on {host}:{port} ({exc.strerror}); set "
                         "APS_WEB_PORT to a free port") from None
