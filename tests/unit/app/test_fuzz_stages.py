"""Fuzz every stage: random bytes and random mutations of valid records, in any order.

Whatever the bytes, a stage must turn each input into its normal output or a dead letter
with a reason, and never raise (an exception kills the agent, and with it the worker).
The stages are the real adapters (consensus, sequencer, risk, executor) with their real
engines; only the Kafka side is replaced (tests.unit.app.fakes).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.app.consensus_agent import ConsensusStage
from streams.app.deadletters import DeadLetterSink
from streams.app.executor_app import CommandExecutor, ExecutorKeys, ExecutorState
from streams.app.partitioning import account_partition
from streams.app.risk_agent import RiskProcessor
from streams.app.sequencer_agent import Sequencer
from streams.codecs import decode, encode, encode_risk_input
from streams.codecs.signing import sign
from streams.config import Settings
from streams.domain import (
    AccountEvent,
    DeadLetter,
    ExecutionReport,
    ExecutionStatus,
    OracleObservation,
    RiskInput,
    ScalingCommand,
)
from streams.errors import CodecError
from streams.executors import executor_for, load_chain_profiles
from streams.scenario.bundled import bundled_scenario
from streams.topics import ACCOUNT_EVENTS, EXECUTION_REPORTS, ORACLE_TICKS, RISK_INPUTS
from tests.unit.app.fakes import FakeTopic, fake_events
from tests.unit.factories import command

SETTINGS = Settings()
PARTITIONS = SETTINGS.partitions
CHAIN = "arbitrum"


@functools.cache
def _valid_records() -> dict[str, list[bytes]]:
    """Valid records of each source topic, from the bundled scenario (and a signed command)."""
    scenario = bundled_scenario(accounts=6, duration_s=60)
    ticks = [encode(o) for o in scenario.observations[:40]]
    events = [encode(e) for e in scenario.account_events[:40]]
    report = ExecutionReport(
        report_id="r-1", command_id="cmd-1", account_id=scenario.account_events[0].account_id,
        chain=CHAIN, status=ExecutionStatus.FILLED, reason="", action=command().action,
        instrument=command().instrument, filled_quantity=-2.0, fill_price=3000.0, fee=1.0,
        top_up_amount=0.0, executed_at=scenario.start_ms + 1_000, venue="sim")
    reports = [encode(report)]
    commands = [encode(sign(command(f"cmd-{n}", chain=CHAIN, created_at=scenario.start_ms),
                            SETTINGS.command_key)) for n in range(3)]
    entries = [encode_risk_input(ACCOUNT_EVENTS, 0, n, raw) for n, raw in enumerate(events)]
    entries += [encode_risk_input(EXECUTION_REPORTS, 0, 0, reports[0])]
    return {ORACLE_TICKS: ticks, ACCOUNT_EVENTS: events, EXECUTION_REPORTS: reports,
            "commands": commands, RISK_INPUTS: entries}


def _mutate(data: st.DataObject, raw: bytes) -> bytes:
    """One random mutation: flip, insert, delete, truncate, append or splice bytes."""
    kind = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "append",
                                      "empty", "huge"]))
    if kind == "empty":
        return b""
    if kind == "huge":
        return raw + bytes(data.draw(st.integers(100_000, 300_000)))
    at = data.draw(st.integers(0, len(raw)))
    if kind == "flip" and raw:
        at = min(at, len(raw) - 1)
        return raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1:]
    if kind == "insert":
        return raw[:at] + data.draw(st.binary(min_size=1, max_size=16)) + raw[at:]
    if kind == "delete":
        return raw[:at] + raw[at + data.draw(st.integers(1, 16)):]
    if kind == "append":
        return raw + data.draw(st.binary(min_size=1, max_size=64))
    return raw[:at]


def _inputs(data: st.DataObject, valid: Sequence[bytes]) -> list[object]:
    """A batch: valid records, their mutations, records of other schemas, random bytes and
    non-bytes values."""
    others = [raw for records in _valid_records().values() for raw in records]
    strategy = st.one_of(
        st.sampled_from(list(valid)),
        st.sampled_from(others),
        st.sampled_from(list(valid)).map(lambda raw: _mutate(data, raw)),
        st.binary(max_size=256),
        st.sampled_from([None, b"", b"\xc3\x01", "text, not bytes"]),
    )
    return data.draw(st.lists(strategy, min_size=1, max_size=25))


def _decodes(value: object, record_type: type) -> bool:
    try:
        decode(value, record_type)  # type: ignore[arg-type]
    except CodecError:
        return False
    return True


def _letters(topic: FakeTopic) -> list[DeadLetter]:
    return [decode(sent["value"], DeadLetter) for sent in topic.sent]


FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _check(values: Sequence[object], record_type: type, letters: list[DeadLetter],
           outputs: int, processed: Callable[[object], bool] = lambda _: True) -> None:
    """Every undecodable input was dead-lettered; the valid ones were processed."""
    undecodable = [v for v in values if not _decodes(v, record_type)]
    assert len(letters) >= len(undecodable)
    assert all(letter.reason for letter in letters)
    assert outputs + len(letters) >= sum(1 for v in values if processed(v))


@FUZZ
@given(st.data())
def test_consensus_never_raises_and_dead_letters_what_it_cannot_decode(data: st.DataObject
                                                                       ) -> None:
    values = _inputs(data, _valid_records()[ORACLE_TICKS])
    prices, inputs, dead = FakeTopic(), FakeTopic(), FakeTopic()
    stage = ConsensusStage(SETTINGS, {}, prices, inputs, DeadLetterSink(dead, "consensus"))
    asyncio.run(stage.process(fake_events(ORACLE_TICKS, values)))
    undecodable = [v for v in values if not _decodes(v, OracleObservation)]
    assert len(_letters(dead)) >= len(undecodable)
    assert len(inputs.sent) == PARTITIONS * len(prices.sent)


@FUZZ
@given(st.data(), st.sampled_from([ACCOUNT_EVENTS, EXECUTION_REPORTS]))
def test_sequencer_forwards_or_dead_letters_every_input(data: st.DataObject, topic: str
                                                        ) -> None:
    record_type = AccountEvent if topic == ACCOUNT_EVENTS else ExecutionReport
    values = _inputs(data, _valid_records()[topic])
    inputs, dead = FakeTopic(), FakeTopic()
    asyncio.run(Sequencer(PARTITIONS, inputs, DeadLetterSink(dead, "sequencer")).process(
        fake_events(topic, values)))
    # every input is forwarded or dead-lettered, exactly once
    assert len(inputs.sent) + len(_letters(dead)) == len(values)
    _check(values, record_type, _letters(dead), len(inputs.sent))


@FUZZ
@given(st.data())
def test_risk_stage_applies_or_dead_letters_every_input(data: st.DataObject) -> None:
    values = _inputs(data, _valid_records()[RISK_INPUTS])
    commands = {chain: FakeTopic() for chain in SETTINGS.chains}
    dead = FakeTopic()
    processor = RiskProcessor(SETTINGS, {}, {}, commands, DeadLetterSink(dead, "risk"),
                              refusals=FakeTopic())
    asyncio.run(processor.process(fake_events(RISK_INPUTS, values)))
    _check(values, RiskInput, _letters(dead), outputs=0, processed=lambda _: False)


@FUZZ
@given(st.data())
def test_executor_executes_only_valid_signed_commands(data: st.DataObject) -> None:
    valid = _valid_records()["commands"]
    values = _inputs(data, valid)
    reports, dead = FakeTopic(), FakeTopic()
    venue = executor_for(CHAIN, load_chain_profiles(SETTINGS.chains_file))
    keys = ExecutorKeys(SETTINGS.command_key, SETTINGS.report_key)
    executor = CommandExecutor(CHAIN, venue, keys, ExecutorState({}, {}, {}), reports,
                               DeadLetterSink(dead, f"executor.{CHAIN}"), partitions=PARTITIONS)
    # on the partition the genuine commands belong to (another one is misrouted_command)
    home = account_partition(command().account_id, PARTITIONS)
    asyncio.run(executor.process(fake_events("exec.arbitrum.commands", values, home)))
    genuine = {decode(raw, ScalingCommand).command_id for raw in valid}
    executed = {decode(sent["value"], ExecutionReport).command_id for sent in reports.sent}
    assert executed <= genuine  # a mutated command never executes
    # every input got a report or a dead letter
    assert len(reports.sent) + len(_letters(dead)) == len(values)
    _check(values, ScalingCommand, _letters(dead), len(reports.sent))
