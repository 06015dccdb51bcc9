"""The replay's pure parts: the comparison, and the replayer over a recorded log in memory."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from streams.bench.replay import History, recorded_history
from streams.codecs.avro import decode
from streams.codecs.signing import sign
from streams.config import Settings
from streams.domain import ExecutionReport, RiskInput, ScalingCommand
from streams.errors import ConfigError
from streams.replay.audit import ReplayRequest, refuse_state_path, run_audit
from streams.replay.diff import Emission, compare, field_differences, same_value
from streams.replay.replayer import Period
from streams.replay.sources import LoggedInput
from tests.integration.archive import samples as s

KEYS = {"command_key": "unit-command-key", "report_key": "unit-report-key"}
KEYED = Settings(**KEYS, given=frozenset(KEYS))


@cache
def history() -> History:
    """A small recorded history (offline twin of the bundled scenario), two partitions."""
    return recorded_history(accounts=40, duration_s=120, partitions=2, **KEYS)


class MemorySource:
    """A ReplaySource over recorded messages held in memory (what the archive would hold)."""

    description = "memory"

    def __init__(self, record: History, forged: dict[int, set[int]] | None = None) -> None:
        self.by_partition: dict[int, list[LoggedInput]] = {}
        for m in record.inputs:
            self.by_partition.setdefault(m.partition, []).append(
                LoggedInput(m.offset, decode(m.value, RiskInput)))
        self.recorded = [decode(m.value, ScalingCommand) for m in record.commands]
        self.forged = forged or {}

    def partitions(self) -> list[int]:
        return sorted(self.by_partition)

    def end_offset(self, partition: int, until_ms: int | None) -> int:
        entries = [e for e in self.by_partition[partition]
                   if until_ms is None or _time(e) <= until_ms]
        return max((e.offset for e in entries), default=-1) + 1

    def inputs(self, partition: int, end: int) -> Iterator[list[LoggedInput]]:
        yield [e for e in self.by_partition[partition] if e.offset < end]

    def commands(self, start_ms: int | None, end_ms: int | None) -> list[ScalingCommand]:
        return [c for c in self.recorded if Period(start_ms, end_ms).contains(c.created_at)]

    def forged_reports(self, partition: int) -> set[int]:
        return self.forged.get(partition, set())


def _time(entry: LoggedInput) -> int:
    assert entry.item is not None
    body = entry.item.body
    return body.executed_at if isinstance(body, ExecutionReport) else body.event_time


def test_a_replay_of_the_recorded_log_decides_every_recorded_command_again() -> None:
    result = run_audit(MemorySource(history()), KEYED, ReplayRequest())
    assert result.comparison.identical
    assert result.comparison.matched == len(history().commands) > 50
    assert result.report["signatures_compared"] is True
    assert [p["partition"] for p in result.report["partitions"]] == [0, 1]
    # the settings replayed with are those every recorded command names
    recorded = {decode(m.value, ScalingCommand).provenance.config_hash
                for m in history().commands}
    assert recorded == {result.report["engine_config_hash"]}


def test_a_period_compares_only_the_commands_created_in_it() -> None:
    created = sorted(decode(m.value, ScalingCommand).created_at for m in history().commands)
    period = Period(created[len(created) // 3], created[2 * len(created) // 3])
    result = run_audit(MemorySource(history()), KEYED, ReplayRequest(period=period))
    assert result.comparison.identical
    assert result.comparison.recorded == sum(period.contains(t) for t in created)


def test_one_partition_compares_only_its_accounts_commands() -> None:
    result = run_audit(MemorySource(history()), KEYED, ReplayRequest(partitions=(1,)))
    inputs = [m for m in history().inputs if m.partition == 1 and m.key]
    accounts = {m.key.decode() for m in inputs if m.key}
    assert result.comparison.identical
    assert result.comparison.recorded == sum(
        decode(m.value, ScalingCommand).account_id in accounts for m in history().commands)


def test_without_the_executors_key_forged_reports_come_from_the_record() -> None:
    record = history()
    victim = next(m for m in record.inputs if m.partition == 0
                  and isinstance(decode(m.value, RiskInput).body, ExecutionReport))
    item = decode(victim.value, RiskInput)
    assert isinstance(item.body, ExecutionReport)
    forged = dataclasses.replace(item, body=sign(item.body, "someone-elses-key"))
    tampered = [dataclasses.replace(m, value=_encode(forged)) if m is victim else m
                for m in record.inputs]
    forged_history = History(tampered, record.commands)
    # with the key, the replay refuses the forged report itself: the fill never happened
    keyed = run_audit(MemorySource(forged_history), KEYED, ReplayRequest())
    assert keyed.replays[0].skipped["forged_report"] == 1
    assert not keyed.comparison.identical
    # without it, it takes the worker's dead letter for that offset: the same outcome
    unkeyed = run_audit(MemorySource(forged_history, {0: {victim.offset}}), Settings(),
                        ReplayRequest())
    assert unkeyed.replays[0].forged_from_record == 1
    assert unkeyed.report["reports_verified"] is False
    assert unkeyed.report["signatures_compared"] is False
    assert unkeyed.report["summary"] == keyed.report["summary"]


def _encode(item: RiskInput) -> bytes:
    from streams.codecs.avro import encode
    return encode(item)


def test_offsets_need_exactly_one_partition() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        run_audit(MemorySource(history()), KEYED, ReplayRequest(from_offset=10))


def test_an_unknown_partition_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"partition\(s\) \[7\]"):
        run_audit(MemorySource(history()), KEYED, ReplayRequest(partitions=(7,)))


def test_field_differences_name_nested_fields_and_both_values() -> None:
    original = s.command("acct-1", 1)
    changed = dataclasses.replace(original, quantity=original.quantity + 1, provenance=(
        dataclasses.replace(original.provenance, price=original.provenance.price * 2)))
    diffs = {d.field: (d.recorded, d.replayed) for d in field_differences(original, changed)}
    assert diffs == {"quantity": (original.quantity, original.quantity + 1),
                     "provenance.price": (original.provenance.price,
                                          original.provenance.price * 2)}
    assert field_differences(original, dataclasses.replace(original, signature="x:y"),
                             signature=False) == ()


def test_nan_equals_nan_and_an_int_is_not_a_float() -> None:
    assert same_value(float("nan"), float("nan"))
    assert not same_value(1, 1.0)
    assert same_value(0.1 + 0.2, 0.1 + 0.2) and not same_value(0.3, 0.1 + 0.2)


def test_compare_sorts_differences_by_where_they_were_decided() -> None:
    a, b, c = (s.command("acct-1", n) for n in range(3))
    late, early = Emission(0, 9, 2_000), Emission(0, 4, 1_000)
    comparison = compare([a, b], {b.command_id: (b, late), c.command_id: (c, early)},
                         lambda _cmd: Emission(0, 7, 1_500))
    assert [(d.kind, d.command_id) for d in comparison.differences] == [
        ("missing", c.command_id), ("extra", a.command_id)]
    assert comparison.first_divergence is not None
    assert comparison.first_divergence.command_id == c.command_id
    assert (comparison.recorded, comparison.replayed, comparison.matched) == (2, 2, 1)


def test_a_report_is_never_written_into_the_pipelines_state(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    (tmp_path / "worker-123").mkdir()
    for inside in (tmp_path / "chdb" / "report.json", tmp_path / "worker-123" / "r.json"):
        with pytest.raises(ConfigError, match="pipeline's own state"):
            refuse_state_path(inside, settings)
    refuse_state_path(tmp_path / "report.json", settings)


def test_offsets_the_record_lacks_are_counted_and_the_first_named() -> None:
    record = history()
    lost = {m.offset for m in record.inputs if m.partition == 0 and m.offset in (40, 41, 97)}
    thinned = History([m for m in record.inputs
                       if not (m.partition == 0 and m.offset in lost)], record.commands)
    result = run_audit(MemorySource(thinned), KEYED, ReplayRequest())
    part = result.report["partitions"][0]
    assert (part["missing_offsets"], part["first_missing_offset"]) == (3, 40)
    assert result.report["partitions"][1]["missing_offsets"] == 0
