"""Archive throughput: mapping messages to rows, and inserting them into chdb and a server.

    python -m streams.archive.bench [--rows 100000] [--batch 5000] [--url clickhouse://...]

Messages are real single-object encoded ScalingCommands (the widest table). The chdb
insert path (Arrow IPC stream) is measured against JSONEachRow, the obvious alternative,
in the same run. Without --url a throw-away server is started from the installed
clickhouse-server binary (skipped, with a note, if there is none). Prints figures and a
last line ``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from streams.archive.backends import ArchiveBackend, ChdbBackend, ServerBackend
from streams.archive.migrations import migrate
from streams.archive.rows import COMMANDS, KafkaMessage, archive_row
from streams.codecs.avro import encode
from streams.domain import (
    CommandAction,
    CommandReason,
    Instrument,
    InstrumentKind,
    PriceStatus,
    Provenance,
    ScalingCommand,
    Side,
)
from streams.errors import InfraError

T0 = 1_700_000_000_000
BENCH_DATABASE = "aps_bench_scratch"


def sample_messages(count: int) -> list[KafkaMessage]:
    """`count` distinct encoded commands spread over 4 partitions and 1,000 accounts."""
    out = []
    for i in range(count):
        account = f"acct-{i % 1000}"
        command = ScalingCommand(
            command_id=f"cmd-{i:09d}", account_id=account, chain="arbitrum",
            reason=CommandReason.DELTA_REBALANCE, rule="delta_band",
            trigger={"delta": 3.5 + i % 7, "band": 1.0}, action=CommandAction.TRADE,
            instrument=Instrument("ETH-PERP", InstrumentKind.PERP, "ETH", "arbitrum"),
            side=Side.SELL if i % 2 else Side.BUY, quantity=1.0 + i % 13, amount=0.0,
            limit_price=2990.0, slippage_bps=30.0, reduce_only=False, created_at=T0 + i,
            deadline=T0 + i + 60_000,
            provenance=Provenance("ETH", 3000.0, 1.2, T0 + i, PriceStatus.OK,
                                  ["pyth:arbitrum", "chainlink:ethereum"], i, "rules-h1"),
            signature="ab" * 32)
        out.append(KafkaMessage("exec.arbitrum.commands", i % 4, i // 4, account.encode(),
                                encode(command), T0 + i))
    return out


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def time_mapping(messages: Sequence[KafkaMessage]) -> tuple[list[tuple[Any, ...]], float]:
    """Rows of `messages` and the seconds the mapping (decode + row) took."""
    start = time.perf_counter()
    rows = [archive_row(m, 1_700_000_100)[1] for m in messages]
    return rows, time.perf_counter() - start


def time_inserts(insert: Callable[[Sequence[tuple[Any, ...]]], None],
                 rows: Sequence[tuple[Any, ...]], batch: int) -> float:
    """Seconds to insert `rows` in blocks of `batch`."""
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        insert(rows[i:i + batch])
    return time.perf_counter() - start


def _json_each_row(backend: ChdbBackend) -> Callable[[Sequence[tuple[Any, ...]]], None]:
    """The baseline chdb path: ``INSERT ... FORMAT JSONEachRow`` with the rows inline."""
    names = COMMANDS.column_names

    def insert(rows: Sequence[tuple[Any, ...]]) -> None:
        body = "\n".join(json.dumps(dict(zip(names, row, strict=True))) for row in rows)
        backend.execute(f"INSERT INTO {COMMANDS.name} FORMAT JSONEachRow\n{body}")

    return insert


def _native(backend: ArchiveBackend) -> Callable[[Sequence[tuple[Any, ...]]], None]:
    def insert(rows: Sequence[tuple[Any, ...]]) -> None:
        backend.insert(COMMANDS.name, COMMANDS.columns, rows)

    return insert


def _fresh_table(backend: ArchiveBackend) -> None:
    backend.execute(f"TRUNCATE TABLE {COMMANDS.name}")


def run(rows: int = 100_000, batch: int = 5_000, url: str | None = None) -> dict[str, float]:
    """Measure and print; return the figures (rows per second)."""
    messages = sample_messages(rows)
    data, map_s = time_mapping(messages)
    results = {"map_rows_per_s": _rate(rows, map_s)}
    print(f"mapping (decode + row): {results['map_rows_per_s']:,.0f} rows/s over {rows:,} "
          f"ScalingCommands")
    with tempfile.TemporaryDirectory(prefix="aps-bench-") as tmp:
        chdb = ChdbBackend(Path(tmp) / "chdb")
        try:
            migrate(chdb)
            time_inserts(_native(chdb), data[:batch], batch)  # warm-up
            _fresh_table(chdb)
            arrow_s = time_inserts(_native(chdb), data, batch)
            _fresh_table(chdb)
            json_s = time_inserts(_json_each_row(chdb), data, batch)
        finally:
            chdb.close()
    results["chdb_arrow_rows_per_s"] = _rate(rows, arrow_s)
    results["chdb_json_rows_per_s"] = _rate(rows, json_s)
    print(f"chdb insert, Arrow IPC stream: {results['chdb_arrow_rows_per_s']:,.0f} rows/s "
          f"(batches of {batch:,})")
    print(f"chdb insert, JSONEachRow:      {results['chdb_json_rows_per_s']:,.0f} rows/s "
          f"(baseline; Arrow is {json_s / arrow_s:.1f}x faster)")
    server_rate = _server_rate(data, batch, url)
    if server_rate is not None:
        results["server_rows_per_s"] = server_rate
        print(f"server insert, native columnar: {server_rate:,.0f} rows/s")
    print("RESULT " + " ".join(f"{k}={v:.0f}" for k, v in results.items()))
    return results


def _server_rate(data: Sequence[tuple[Any, ...]], batch: int, url: str | None) -> float | None:
    from streams.infra.clickhouse import ClickHouseServer

    if url:
        return _measure_server(url, data, batch)
    try:
        with ClickHouseServer() as server:
            return _measure_server(server.url, data, batch)
    except InfraError as exc:
        print(f"server insert: skipped ({exc})")
        return None


def _measure_server(url: str, data: Sequence[tuple[Any, ...]], batch: int) -> float:
    """Insert rate into a scratch database of the server at `url` (dropped afterwards)."""
    parts = urlsplit(url)
    backend = ServerBackend(urlunsplit(parts._replace(path=f"/{BENCH_DATABASE}")))
    try:
        migrate(backend)
        time_inserts(_native(backend), data[:batch], batch)  # warm-up
        _fresh_table(backend)
        return _rate(len(data), time_inserts(_native(backend), data, batch))
    finally:
        backend.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE}")
        backend.close()


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--url", default=None, help="clickhouse:// URL of a server to use")
    args = parser.parse_args()
    run(rows=args.rows, batch=args.batch, url=args.url)


if __name__ == "__main__":
    main()
