"""One archive suite, run against embedded chdb and a real ClickHouse server (18.16 here).

Rows come from real single-object encoded records of every schema (tests/.../samples.py)
mapped by the same code the archiver uses.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import pytest

from streams.archive import history
from streams.archive.backends import ArchiveBackend, ArchiveError
from streams.archive.migrations import (
    MIGRATIONS_DIR,
    MigrationError,
    applied_migrations,
    column_exists,
    load_migrations,
    migrate,
    pending_migrations,
    table_exists,
)
from streams.archive.rows import (
    ALL_TABLES,
    UNDECODABLE,
    KafkaMessage,
)
from streams.codecs.avro import encode
from streams.domain import CommandReason, ExecutionStatus, PriceStatus
from tests.integration.archive import samples as s
from tests.integration.archive.samples import ARCHIVED_AT, as_messages, insert_messages


def sample_of(samples: list[s.Sample], table: str) -> s.Sample:
    """The first sample that belongs in `table`."""
    return next(sample for sample in samples if sample.table == table)


def distinct_count(backend: ArchiveBackend, table: str) -> int:
    return int(backend.query(f"SELECT count() FROM {table} FINAL").scalar())


def stored_count(backend: ArchiveBackend, table: str) -> int:
    return int(backend.query(f"SELECT count() FROM {table}").scalar())


@pytest.fixture
def archive(archive_backend: ArchiveBackend) -> ArchiveBackend:
    """A migrated, empty archive."""
    migrate(archive_backend)
    return archive_backend


# --- migrations ------------------------------------------------------------------------------

def test_migrations_apply_once_and_create_every_table_as_declared(
        archive_backend: ArchiveBackend) -> None:
    versions = [m.version for m in load_migrations()]
    assert migrate(archive_backend) == versions
    assert migrate(archive_backend) == []  # second run: nothing pending, nothing fails
    assert sorted(applied_migrations(archive_backend)) == versions
    for spec in ALL_TABLES:
        described = archive_backend.query(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase() "
            "AND table = {t:String}", {"t": spec.name})
        assert [tuple(r) for r in described.rows] == [(c.name, c.type) for c in spec.columns]


def test_an_edited_applied_migration_is_refused(archive_backend: ArchiveBackend,
                                                tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    migrate(archive_backend, directory)
    first = sorted(directory.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited afterwards\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        pending_migrations(archive_backend, directory)


def test_a_new_migration_file_is_applied_alone(archive_backend: ArchiveBackend,
                                               tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    migrate(archive_backend, directory)
    (directory / "900_extra.sql").write_text(
        "-- two statements in one file\n"
        "CREATE TABLE IF NOT EXISTS extra_a (x Int64) ENGINE = MergeTree() ORDER BY x;\n"
        "CREATE TABLE IF NOT EXISTS extra_b (x Int64) ENGINE = MergeTree() ORDER BY x;\n")
    assert migrate(archive_backend, directory) == ["900_extra"]
    assert table_exists(archive_backend, "extra_b")


def test_a_column_added_by_an_interrupted_run_is_not_added_twice(
        archive_backend: ArchiveBackend, tmp_path: Path) -> None:
    # 18.16 has no ADD COLUMN IF NOT EXISTS: the runner skips an ADD COLUMN whose column is
    # there (a run stopped after the statement and before its record applies it again)
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    migrate(archive_backend, directory)
    add = "ALTER TABLE commands ADD COLUMN extra_c String DEFAULT '' AFTER rules_hash;\n"
    (directory / "900_add.sql").write_text(add)
    (directory / "901_add_again.sql").write_text(add)
    assert migrate(archive_backend, directory) == ["900_add", "901_add_again"]
    assert column_exists(archive_backend, "commands", "extra_c")
    assert not column_exists(archive_backend, "commands", "no_such_column")
    (directory / "902_bad.sql").write_text(
        "ALTER TABLE commands ADD COLUMN extra_d NoSuchType;\n")
    with pytest.raises(MigrationError, match="902_bad"):
        migrate(archive_backend, directory)


# --- rows of every schema ----------------------------------------------------------------------

def test_every_table_accepts_rows_of_real_records(archive: ArchiveBackend) -> None:
    samples = s.samples("t-")
    inserted = insert_messages(archive, as_messages(samples))
    assert inserted == Counter(sample.table for sample in samples)
    assert set(inserted) | {UNDECODABLE.name} == {spec.name for spec in ALL_TABLES}
    for table, count in inserted.items():
        assert distinct_count(archive, table) == count


def test_typed_columns_and_json_record_of_a_command(archive: ArchiveBackend) -> None:
    cmd = s.command("acct-7", 1, chain="ethereum", t=s.T0 + 42)
    insert_messages(archive, [KafkaMessage("exec.ethereum.commands", 3, 99, b"acct-7",
                                           encode(cmd), s.T0 + 50)])
    row = archive.query("SELECT * FROM commands FINAL").dicts()[0]
    assert (row["topic"], row["kafka_partition"], row["kafka_offset"], row["kafka_key"]) == (
        "exec.ethereum.commands", 3, 99, "acct-7")
    assert row["event_time"] == s.T0 + 42
    assert row["event_dt"].timestamp() == (s.T0 + 42) // 1000
    assert row["archived_at"].timestamp() == ARCHIVED_AT
    assert (row["command_id"], row["chain"], row["reason"], row["side"], row["reduce_only"]) == (
        "acct-7-cmd-1", "ethereum", "DELTA_REBALANCE", "SELL", 1)
    assert (row["quantity"], row["price"], row["state_version"]) == (2.5, 3000.0, 8)
    assert row["instrument_id"] == "ETH-PERP-ethereum"
    assert (row["rules_hash"], row["config_hash"]) == ("rules-h1", "config-h1")
    record = json.loads(row["record"])
    assert record["trigger"] == {"delta": 3.5, "band": 1.0}
    assert record["provenance"]["sources"] == ["pyth:arbitrum", "chainlink:ethereum"]
    assert record["instrument"]["kind"] == "PERP"


def test_unions_nulls_and_non_finite_numbers_survive(archive: ArchiveBackend) -> None:
    event = sample_of(s.samples("u-"), "account_events")  # PositionChanged
    top_up = s.top_up("acct-3", 0)
    state = s.account_state("acct-3", 2, ratio=math.inf)
    insert_messages(archive, [
        KafkaMessage("account.events", 0, 0, event.key, event.value, 1),
        KafkaMessage("exec.ethereum.commands", 0, 0, b"acct-3", encode(top_up), 1),
        KafkaMessage(s.CHANGELOG, 0, 0, b"acct-3", encode(state), 1),
    ])
    ev = archive.query("SELECT event_type, quantity, balance_delta, record "
                       "FROM account_events FINAL").dicts()[0]
    assert (ev["event_type"], ev["quantity"], ev["balance_delta"]) == ("PositionChanged", 2.0,
                                                                       None)
    assert json.loads(ev["record"])["body"]["_type"] == "PositionChanged"
    cmd = archive.query("SELECT side, instrument_id, amount FROM commands FINAL").rows[0]
    assert cmd == (None, None, 25_000.0)
    st = archive.query("SELECT margin_ratio, record FROM account_states FINAL").rows[0]
    assert st[0] == math.inf
    assert json.loads(st[1])["valuation"]["margin_ratio"] == "Infinity"


# --- nothing is lost: undecodable messages --------------------------------------------------

def test_messages_that_cannot_be_decoded_are_kept_raw_with_the_reason(
        archive: ArchiveBackend) -> None:
    price = encode(s.consensus("ETH", 1))
    unknown = b"\xc3\x01" + b"\x00" * 8 + b"body"
    messages = [
        KafkaMessage("account.events", 0, 0, b"k", b"not avro at all", 11),
        KafkaMessage("account.events", 0, 1, b"k", unknown, 12),
        KafkaMessage("account.events", 0, 2, b"k", price, 13),  # valid, wrong topic
        KafkaMessage("account.events", 0, 3, b"k", price[:11], 14),  # truncated body
        KafkaMessage("oracle.prices", 0, 0, b"\xff\xfe", None, 15),
        KafkaMessage("no.such.topic", 0, 0, None, b"x", 16),
    ]
    assert insert_messages(archive, messages) == Counter({"undecodable_messages": 6})
    rows = archive.query(
        "SELECT topic, kafka_offset, reason, payload_hex, kafka_key, key_hex, event_time "
        "FROM undecodable_messages FINAL ORDER BY topic, kafka_offset").rows
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("account.events", 0, "bad_framing"), ("account.events", 1, "unknown_schema"),
        ("account.events", 2, "wrong_schema"), ("account.events", 3, "malformed_avro"),
        ("no.such.topic", 0, "unknown_topic"), ("oracle.prices", 0, "empty_value")]
    assert bytes.fromhex(rows[0][3]) == b"not avro at all"
    assert rows[5][4:6] == ("\\xff\\xfe", "fffe")  # non-UTF-8 key kept, readable and exact
    assert rows[0][6] == 11  # event time = Kafka timestamp


def test_a_changelog_tombstone_marks_the_account_deleted(archive: ArchiveBackend) -> None:
    state = encode(s.account_state("acct-5", 1, ratio=2.0))
    insert_messages(archive, [KafkaMessage(s.CHANGELOG, 0, 0, b"acct-5", state, 100),
                              KafkaMessage(s.CHANGELOG, 0, 1, b"acct-5", None, 200)])
    rows = archive.query("SELECT account_id, deleted, record FROM account_states FINAL "
                         "ORDER BY kafka_offset").rows
    assert [(r[0], r[1]) for r in rows] == [("acct-5", 0), ("acct-5", 1)]
    assert rows[1][2] == "null"
    assert history.accounts(archive).rows == []


# --- dedup ------------------------------------------------------------------------------------

def test_re_archived_messages_are_counted_once(archive: ArchiveBackend) -> None:
    messages = as_messages(s.samples("d-"))
    first = insert_messages(archive, messages)
    insert_messages(archive, messages[:7])  # a crash after insert, before commit
    insert_messages(archive, messages)  # ... and a restart from an older commit
    for table, count in first.items():
        assert distinct_count(archive, table) == count
        assert stored_count(archive, table) >= count
    counts = {(r[0], r[1]): (r[2], r[3]) for r in history.counts(archive).rows}
    distinct, stored = counts[("commands", "exec.ethereum.commands")]
    assert distinct == 2
    assert stored >= distinct  # copies stay stored until a background merge
    archive.execute("OPTIMIZE TABLE commands FINAL")
    assert stored_count(archive, "commands") == first["commands"]


def test_same_coordinates_after_a_broker_reset_are_different_messages(
        archive: ArchiveBackend) -> None:
    # an in-memory broker restarts its offsets at 0: the broker timestamp tells them apart
    one = encode(s.command("acct-1", 1))
    insert_messages(archive, [KafkaMessage("exec.ethereum.commands", 0, 0, b"a", one, 1000)])
    insert_messages(archive, [KafkaMessage("exec.ethereum.commands", 0, 0, b"a", one, 9000)])
    assert distinct_count(archive, "commands") == 2


# --- history queries ----------------------------------------------------------------------------

@pytest.fixture
def filled(archive: ArchiveBackend) -> ArchiveBackend:
    """An archive with commands, prices, reports, dead letters and account states."""
    encoded = []
    for i in range(6):
        account = f"acct-{i % 3}"
        chain = "ethereum" if i % 2 else "arbitrum"
        reason = CommandReason.MARGIN_REDUCE if i == 4 else CommandReason.DELTA_REBALANCE
        encoded.append((f"exec.{chain}.commands", account,
                        encode(s.command(account, i, chain=chain, reason=reason,
                                         t=s.T0 + 1000 * i, price=3000.0 + i))))
    for i in range(4):
        status = PriceStatus.DEGRADED if i == 3 else PriceStatus.OK
        encoded.append(("oracle.prices", "BTC" if i % 2 else "ETH",
                        encode(s.consensus("BTC" if i % 2 else "ETH", i, t=s.T0 + 1000 * i,
                                           status=status))))
    encoded.append(("execution.reports", "acct-0", encode(s.report("acct-0", 0))))
    encoded.append(("execution.reports", "acct-1",
                    encode(s.report("acct-1", 1, status=ExecutionStatus.EXPIRED))))
    encoded.append(("aps.deadletter", "risk", sample_of(s.samples("h-"), "dead_letters").value))
    states = [("acct-0", 1, 3.0), ("acct-1", 1, 1.2), ("acct-0", 2, 0.9), ("acct-2", 1, None),
              ("acct-3", 1, 0.5)]
    for account, version, ratio in states:
        encoded.append((s.CHANGELOG, account, encode(s.account_state(account, version,
                                                                     ratio=ratio))))
    offsets: Counter[str] = Counter()
    messages = []
    for n, (topic, key, value) in enumerate(encoded):
        messages.append(KafkaMessage(topic, 0, offsets[topic], key.encode(), value, s.T0 + n))
        offsets[topic] += 1
    messages.append(KafkaMessage(s.CHANGELOG, 0, offsets[s.CHANGELOG], b"acct-3", None,
                                 s.T0 + 999))  # acct-3 deleted afterwards
    insert_messages(archive, messages)
    insert_messages(archive, messages)  # archived twice: history must not show doubles
    return archive


def test_history_commands_newest_first_with_filters(filled: ArchiveBackend) -> None:
    newest = history.commands(filled, limit=5)
    assert newest.columns[:10] == ("id", "time", "account", "chain", "reason", "rule", "action",
                                   "side", "quantity", "amount")
    assert [r[0] for r in newest.rows] == [f"acct-{i % 3}-cmd-{i}" for i in (5, 4, 3, 2, 1)]
    assert [r[0] for r in history.commands(filled, account="acct-1").rows] == [
        "acct-1-cmd-4", "acct-1-cmd-1"]
    assert {r[3] for r in history.commands(filled, chain="ethereum").rows} == {"ethereum"}
    assert len(history.commands(filled, chain="ethereum").rows) == 3
    assert [r[0] for r in history.commands(filled, reason="MARGIN_REDUCE").rows] == [
        "acct-1-cmd-4"]
    assert history.commands(filled, account="nobody").rows == []


def test_history_prices_reports_and_dead_letters(filled: ArchiveBackend) -> None:
    prices = history.prices(filled).dicts()
    assert [(p["asset"], p["price"]) for p in prices][:2] == [("BTC", 3000.0), ("ETH", 3000.0)]
    assert len(prices) == 4
    assert [p["sequence"] for p in history.prices(filled, asset="ETH").dicts()] == [2, 0]
    assert [p["status"] for p in history.prices(filled, status="DEGRADED").dicts()] == [
        "DEGRADED"]
    reports = history.reports(filled).dicts()
    assert sorted(r["id"] for r in reports) == ["acct-0-rep-0", "acct-1-rep-1"]
    assert [r["status"] for r in history.reports(filled, status="EXPIRED").dicts()] == [
        "EXPIRED"]
    letters = history.dead_letters(filled).dicts()
    assert [(d["stage"], d["reason"], d["source_offset"]) for d in letters] == [
        ("risk", "unknown_instrument", 17)]


def test_history_accounts_latest_state_lowest_margin_first(filled: ArchiveBackend) -> None:
    rows = history.accounts(filled).dicts()
    # acct-0's latest state (version 2) wins over its first; acct-3 was deleted; never
    # valued accounts (acct-2) come last
    assert [(r["account"], r["version"], r["margin_ratio"]) for r in rows] == [
        ("acct-0", 2, 0.9), ("acct-1", 1, 1.2), ("acct-2", 1, None)]
    assert rows[0]["collateral"] == 50_000.0
    assert rows[0]["positions"] == 2
    assert [r["account"] for r in history.accounts(filled, account="acct-1").dicts()] == [
        "acct-1"]


def test_history_counts_and_read_only_sql(filled: ArchiveBackend) -> None:
    counts = {(r[0], r[1]): r[2] for r in history.counts(filled).rows}
    assert counts[("commands", "exec.arbitrum.commands")] == 3
    assert counts[("account_states", s.CHANGELOG)] == 6
    assert counts[("undecodable_messages", "")] == 0
    result = history.sql(filled, "SELECT reason, count() AS n FROM commands FINAL "
                                 "GROUP BY reason ORDER BY reason")
    assert result.columns == ("reason", "n")
    assert result.rows == [("DELTA_REBALANCE", 5), ("MARGIN_REDUCE", 1)]
    with pytest.raises(ArchiveError):
        history.sql(filled, "DROP TABLE commands")
    with pytest.raises(ArchiveError):
        history.sql(filled, "INSERT INTO commands (topic) VALUES ('x')")
    assert distinct_count(filled, "commands") == 6  # still there, still writable
    insert_messages(filled, [KafkaMessage("exec.arbitrum.commands", 9, 0, b"k",
                                          encode(s.command("acct-9", 9)), 1)])
    assert distinct_count(filled, "commands") == 7



OUTSIDE_THE_ARCHIVE = [
    "SELECT * FROM file('{secret}', 'LineAsString')",
    "SELECT file('{secret}')",
    "SELECT count() FROM commands WHERE command_id IN (SELECT * FROM file('{secret}', 'CSV'))",
    "SELECT * FROM url('http://127.0.0.1:1/', 'CSV')",
    "SELECT * FROM remote('127.0.0.1:9000', system.one)",
    "SELECT name FROM system.tables",
    "SELECT * FROM `system`.one",
    "SELECT 1 FROM commands WHERE topic GLOBAL IN system.tables",
    "SELECT * FROM numbers(3)",
    "SELECT dictGet('a', 'b', 1)",
    "SELECT joinGet('system.one', 'dummy', 0)",
    "SELECT count() FROM default_not_the_archive.commands",
    "SELECT count() FROM commands INTO OUTFILE '{secret}.out'",
    "SELECT count() FROM commands FORMAT TSV",
    "SELECT 1; DROP TABLE commands",
    "DROP TABLE commands",
    "SHOW TABLES FROM system",
]


def test_history_sql_reads_nothing_outside_the_archive(filled: ArchiveBackend,
                                                       tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret\n")
    for template in OUTSIDE_THE_ARCHIVE:
        query = template.format(secret=secret)
        with pytest.raises(ArchiveError) as refused:
            history.sql(filled, query)
        assert "host secret" not in str(refused.value), query
    assert not (tmp_path / "secret.txt.out").exists()
    database = filled.query("SELECT currentDatabase()").scalar()
    allowed = [
        f"SELECT count() FROM {database}.commands FINAL",
        "SELECT c.command_id, r.status FROM commands AS c FINAL ANY LEFT JOIN "
        "(SELECT command_id, status FROM execution_reports FINAL) AS r USING command_id",
        "SELECT count() FROM commands WHERE account_id IN (SELECT account_id FROM "
        "account_states) AND chain IN ('ethereum', 'arbitrum')",
        "SELECT count() FROM schema_migrations",
    ]
    for query in allowed:
        assert history.sql(filled, query).rows, query
