"""Archive throughput: decode + map per row vs column-wise, and end to end into both backends.

    aps bench archive [--rows 100000] [--batch 20000] [--url clickhouse://...]
    python -m streams.archive.bench ...

The messages are a realistic mix of every archived topic (`streams.archive.workload`: the
proportions and record shapes of a bundled `aps run`), real single-object encoded Avro,
including a few malformed ones and changelog tombstones. Measured in the same run, in
rows per second of one process (this one), each the best of `--repeat` passes:

- decode + map, per row: `rows.archive_row`, what the archiver ran before (on at most
  20,000 messages: it is slow);
- decode + map, column-wise: `ColumnarMapper.map`, what the archiver runs now;
- end to end into chdb: map and insert every table's block, batch after batch, exactly
  as the archiver does between consuming and committing (no broker: this measures the
  archive, not Kafka);
- the same into a ClickHouse server through clickhouse-driver (a throw-away server started
  from the installed binary unless `--url` names one; its database is dropped afterwards).

Every pass checks that the archive holds exactly one row per message. On a shared machine
wall-clock figures move with the neighbours' load: the load average is printed before and
after, and each figure also as rows per CPU-second of this process (all its threads,
chdb's included; the server's own CPU is not in it). Last line: ``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from streams.archive.archiver import insert_tables
from streams.archive.backends import ArchiveBackend, ChdbBackend, ServerBackend
from streams.archive.columnar import ColumnarMapper, MessageBatch, open_mapper
from streams.archive.migrations import migrate
from streams.archive.rows import ALL_TABLES, KafkaMessage, archive_row
from streams.archive.workload import messages as workload_messages
from streams.errors import InfraError

BENCH_DATABASE = "aps_bench_scratch"
ARCHIVED_AT = 1_768_478_500
PER_ROW_LIMIT = 20_000
TARGET = 300_000


def batches(messages: Sequence[KafkaMessage], size: int) -> list[MessageBatch]:
    """The messages cut into consumer-sized batches."""
    return [MessageBatch.of(messages[i:i + size]) for i in range(0, len(messages), size)]


@dataclass(frozen=True, slots=True)
class Rate:
    """Rows per wall-clock second and per CPU-second of this process (best runs)."""

    wall: float
    cpu: float


def best_rate(count: int, run: Callable[[], object], repeat: int,
              before: Callable[[], object] | None = None) -> Rate:
    """Rates of the fastest of `repeat` runs (`before` runs untimed each time)."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        if before is not None:
            before()
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return Rate(count / wall if wall > 0 else float("inf"),
                count / cpu if cpu > 0 else float("inf"))


def per_row_rate(messages: Sequence[KafkaMessage], repeat: int) -> Rate:
    """Decode + map with the per-row reference (what the archiver did before)."""
    sample = messages[:PER_ROW_LIMIT]
    return best_rate(len(sample), lambda: [archive_row(m, ARCHIVED_AT) for m in sample],
                     repeat)


def map_rate(mapper: ColumnarMapper, cut: Sequence[MessageBatch], repeat: int) -> Rate:
    """Decode + map column-wise."""
    count = sum(len(b) for b in cut)
    return best_rate(count, lambda: [mapper.map(b, ARCHIVED_AT) for b in cut], repeat)


def end_to_end_rate(backend: ArchiveBackend, mapper: ColumnarMapper,
                    cut: Sequence[MessageBatch], repeat: int) -> Rate:
    """Map and insert batch after batch into an emptied archive; checks the row count."""
    count = sum(len(b) for b in cut)

    def empty() -> None:
        for spec in ALL_TABLES:
            backend.execute(f"TRUNCATE TABLE {spec.name}")

    def run() -> None:
        for batch in cut:
            insert_tables(backend, mapper.map(batch, ARCHIVED_AT))

    rate = best_rate(count, run, repeat, before=empty)
    stored = sum(int(backend.query(f"SELECT count() FROM {spec.name}").scalar())
                 for spec in ALL_TABLES)
    if stored != count:
        raise InfraError(f"benchmark archive holds {stored} rows for {count} messages")
    return rate


def chdb_rates(cut: Sequence[MessageBatch], repeat: int) -> dict[str, Rate]:
    """Column-wise map rate and end-to-end rate into a fresh embedded archive."""
    with tempfile.TemporaryDirectory(prefix="aps-bench-") as tmp:
        backend = ChdbBackend(Path(tmp) / "chdb")
        mapper = open_mapper(backend)
        try:
            migrate(backend)
            mapper.map(cut[0], ARCHIVED_AT)  # compiles every schema once
            return {"map_columnar": map_rate(mapper, cut, repeat),
                    "chdb": end_to_end_rate(backend, mapper, cut, repeat)}
        finally:
            mapper.close()
            backend.close()


def server_rate(cut: Sequence[MessageBatch], repeat: int, url: str | None) -> Rate | None:
    """End-to-end rate into a ClickHouse server (None, with a note, if there is none)."""
    from streams.infra.clickhouse import ClickHouseServer

    if url:
        return _measure_server(url, cut, repeat)
    try:
        with ClickHouseServer() as server:
            return _measure_server(server.url, cut, repeat)
    except InfraError as exc:
        print(f"server: skipped ({exc})")
        return None


def _measure_server(url: str, cut: Sequence[MessageBatch], repeat: int) -> Rate:
    parts = urlsplit(url)
    backend = ServerBackend(urlunsplit(parts._replace(path=f"/{BENCH_DATABASE}")))
    mapper = open_mapper(backend)
    try:
        migrate(backend)
        return end_to_end_rate(backend, mapper, cut, repeat)
    finally:
        mapper.close()
        backend.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE}")
        backend.close()


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def run(rows: int = 100_000, batch: int = 20_000, url: str | None = None,
        repeat: int = 2) -> dict[str, float]:
    """Measure and print; return the figures (rows per second)."""
    print(f"load average before: {_load()} (1/5/15 min, {os.cpu_count()} cores)")
    messages = workload_messages(rows)
    cut = batches(messages, batch)
    rates = {"map_per_row": per_row_rate(messages, repeat)}
    rates.update(chdb_rates(cut, repeat))
    server = server_rate(cut, repeat, url)
    if server is not None:
        rates["server"] = server
    mix = Counter(m.topic.split(".")[0] if m.topic.startswith("exec.") else m.topic
                  for m in messages)
    print(f"{rows:,} messages of the realistic mix (" + ", ".join(
        f"{topic} {100 * n / rows:.0f} %" for topic, n in mix.most_common()) + ")")
    print(f"batches of {batch:,}, best of {repeat}; rows/s (rows per CPU-second of this "
          "process)")
    labels = {"map_per_row": "decode + map, per row (before)",
              "map_columnar": "decode + map, column-wise (now)",
              "chdb": "end to end into chdb",
              "server": "end to end into the server (clickhouse-driver)"}
    for key, rate in rates.items():
        print(f"{labels[key] + ':':49s} {rate.wall:>10,.0f}  ({rate.cpu:,.0f} per CPU-s)")
    speedup = rates["map_columnar"].wall / rates["map_per_row"].wall
    print(f"column-wise mapping: {speedup:.1f}x the per-row one; target {TARGET:,} rows/s; "
          f"load average after: {_load()}")
    results = {f"{key}_rows_per_s": rate.wall for key, rate in rates.items()}
    results.update({f"{key}_rows_per_cpu_s": rate.cpu for key, rate in rates.items()})
    results["map_speedup"] = speedup
    print("RESULT " + " ".join(f"{k}={v:.1f}" if k == "map_speedup" else f"{k}={v:.0f}"
                               for k, v in results.items()))
    return results


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--url", default=None, help="clickhouse:// URL of a server to use")
    args = parser.parse_args()
    run(rows=args.rows, batch=args.batch, url=args.url, repeat=args.repeat)


if __name__ == "__main__":
    main()
