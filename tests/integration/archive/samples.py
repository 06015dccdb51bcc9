"""Real Avro records of every archived schema, built from the domain dataclasses.

Each sample is a Kafka message (topic, key, single-object encoded value) plus the table it
must land in. Keys start with a caller-chosen prefix so a test can find its own rows in an
archive that other tests also write to.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from streams.archive.archiver import insert_tables
from streams.archive.backends import ArchiveBackend
from streams.archive.columnar import MessageBatch, open_mapper
from streams.archive.rows import KafkaMessage, TableSpec, archive_row
from streams.codecs.avro import encode
from streams.domain import (
    AccountEvent,
    AccountState,
    ActionRefused,
    ChainlinkRound,
    Collateral,
    CollateralChanged,
    CommandAction,
    CommandLimits,
    CommandReason,
    ConsensusPrice,
    DeadLetter,
    DeltaBandRule,
    ExcludedSource,
    ExecutionReport,
    ExecutionStatus,
    Exposure,
    Instrument,
    InstrumentKind,
    OptionType,
    OracleObservation,
    OracleSource,
    PendingCommand,
    Position,
    PositionChanged,
    PriceStatus,
    PricingModel,
    Provenance,
    PythPriceUpdate,
    RiskInput,
    RulesChanged,
    ScalingCommand,
    ScalingRules,
    Side,
    Valuation,
)

T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC, epoch ms
CHANGELOG = "aps-risk-accounts-changelog"


@dataclass(frozen=True)
class Sample:
    """One message to produce (or to map directly) and the table it belongs in."""

    topic: str
    key: bytes
    value: bytes | None
    table: str


def perp(chain: str = "arbitrum") -> Instrument:
    """An ETH perpetual on `chain`."""
    return Instrument(f"ETH-PERP-{chain}", InstrumentKind.PERP, "ETH", chain)


def call_option() -> Instrument:
    """An ETH call, Black-76 on the perp."""
    return Instrument("ETH-C-3500", InstrumentKind.OPTION, "ETH", "ethereum", OptionType.CALL,
                      3500.0, T0 + 30 * 86_400_000, PricingModel.BLACK76)


def command(account: str, n: int, *, chain: str = "arbitrum",
            reason: CommandReason = CommandReason.DELTA_REBALANCE, t: int = T0,
            price: float = 3000.0) -> ScalingCommand:
    """A signed-looking trade command of `account`, created at event time `t`."""
    return ScalingCommand(
        command_id=f"{account}-cmd-{n}", account_id=account, chain=chain, reason=reason,
        rule="delta_band" if reason is CommandReason.DELTA_REBALANCE else "margin_ladder[1]",
        trigger={"delta": 3.5, "band": 1.0}, action=CommandAction.TRADE,
        instrument=perp(chain), side=Side.SELL if n % 2 else Side.BUY, quantity=1.5 + n,
        amount=0.0, limit_price=price * 0.997, slippage_bps=30.0, reduce_only=n % 2 == 1,
        created_at=t, deadline=t + 60_000,
        provenance=Provenance("ETH", price, 1.2, t - 500, PriceStatus.OK,
                              ["pyth:arbitrum", "chainlink:ethereum"], 7 + n, "rules-h1",
                              "config-h1"),
        signature="ab" * 32)


def top_up(account: str, n: int, *, t: int = T0) -> ScalingCommand:
    """A collateral top-up command (no instrument, no side)."""
    return ScalingCommand(
        command_id=f"{account}-topup-{n}", account_id=account, chain="ethereum",
        reason=CommandReason.MARGIN_TOP_UP, rule="margin_ladder[0]",
        trigger={"margin_ratio": 1.15}, action=CommandAction.TOP_UP, instrument=None,
        side=None, quantity=0.0, amount=25_000.0, limit_price=0.0, slippage_bps=0.0,
        reduce_only=False, created_at=t, deadline=t + 60_000,
        provenance=Provenance("ETH", 2500.0, 2.0, t, PriceStatus.DEGRADED, ["pyth:arbitrum"],
                              3, "rules-h1", ""))


def consensus(asset: str, seq: int, *, t: int = T0, price: float = 3000.0,
              status: PriceStatus = PriceStatus.OK) -> ConsensusPrice:
    """A consensus price with one excluded source."""
    return ConsensusPrice(asset, t, price, 1.5, status, 4.2, ["pyth:arbitrum", "chainlink:eth"],
                          [ExcludedSource("pyth:solana", "stale")], [], seq)


def report(account: str, n: int, *, t: int = T0,
           status: ExecutionStatus = ExecutionStatus.FILLED) -> ExecutionReport:
    """A fill (or refusal) of `account`'s command n."""
    return ExecutionReport(f"{account}-rep-{n}", f"{account}-cmd-{n}", account, "arbitrum",
                           status, "" if status is ExecutionStatus.FILLED else "deadline",
                           CommandAction.TRADE, perp(), -1.5, 2991.0, 0.45, 0.0, t + 1200,
                           "sim-arbitrum")


def refusal(account: str, reason: str, *, rule: str = "delta_band:ETH",
            t: int = T0) -> ActionRefused:
    """A refusal of `account`'s rule, with the numbers that decided it."""
    return ActionRefused(account, rule, reason, f"{reason}: 250000.00 > 100000.0",
                         {"notional": 250_000.0, "max_command_notional": 100_000.0,
                          "fired_at": float(t - 1_000)}, t, 2, 41)


def account_state(account: str, version: int, *, ratio: float | None, t: int = T0,
                  breached: bool = False) -> AccountState:
    """An account state; `ratio` None means never valued."""
    valuation = None if ratio is None else Valuation(
        t, 50_000.0, 20_000.0, 10_000.0, ratio, 8_000.0,
        [Exposure("ETH", 3000.0, 2.5, 0.01, 120.0, -30.0)])
    return AccountState(
        account_id=account, version=version, last_event_time=t,
        positions=[Position("p1", perp(), 2.0, 2900.0),
                   Position("p2", call_option(), -10.0, 120.0, 0.65)],
        collateral=[Collateral("arbitrum", 30_000.0, 5_000.0),
                    Collateral("ethereum", 20_000.0, 1_000.0)],
        rules=ScalingRules(delta_band=DeltaBandRule(band=1.0, hard_limit=5.0)),
        rules_hash="rules-h1",
        pending=[PendingCommand(f"{account}-cmd-1", CommandReason.DELTA_REBALANCE,
                                "ETH-PERP-arbitrum", -1.5, 0.0, t, t + 60_000)],
        last_fired={"delta_band:ETH": t}, recent_commands=[t],
        valuation=valuation,
        min_margin_ratio=ratio if ratio is not None else 1e308,
        breached_maintenance=breached, origin_offsets={"risk.inputs:0": 41})


def samples(prefix: str, chains: tuple[str, ...] = ("ethereum", "arbitrum")) -> list[Sample]:
    """At least one real message of every archived schema; keys start with `prefix`."""
    acct = f"{prefix}acct-1"
    acct2 = f"{prefix}acct-2"
    out = [
        Sample("oracle.ticks", f"{prefix}ethereum/eth-usd".encode(), encode(OracleObservation(
            "ethereum", OracleSource.CHAINLINK, "eth-usd", T0,
            ChainlinkRound("110680464442257320247", "300012345678", T0 // 1000 - 3,
                           T0 // 1000 - 2, "110680464442257320247"))), "oracle_ticks"),
        Sample("oracle.ticks", f"{prefix}arbitrum/eth-usd".encode(), encode(OracleObservation(
            "arbitrum", OracleSource.PYTH, "eth-usd", T0 + 400,
            PythPriceUpdate(300_050_000_000, 120_000_000, -8, T0 // 1000, 300_000_000_000,
                            110_000_000))), "oracle_ticks"),
        *(Sample("oracle.prices", f"{prefix}ETH".encode(),
                 encode(consensus("ETH", i, t=T0 + 1000 * i)), "consensus_prices")
          for i in range(3)),
        Sample("account.events", acct.encode(), encode(AccountEvent(
            f"{prefix}ev-1", acct, T0, PositionChanged(Position("p1", perp(), 2.0, 2900.0)))),
            "account_events"),
        Sample("account.events", acct.encode(), encode(AccountEvent(
            f"{prefix}ev-2", acct, T0 + 1, CollateralChanged("arbitrum", 30_000.0, 5_000.0))),
            "account_events"),
        Sample("account.events", acct.encode(), encode(AccountEvent(
            f"{prefix}ev-3", acct, T0 + 2, RulesChanged(ScalingRules(
                delta_band=DeltaBandRule(band=1.0, hard_limit=5.0),
                limits=CommandLimits(cooldown_ms=30_000))))), "account_events"),
        Sample("risk.inputs", acct.encode(), encode(RiskInput("account.events", 0, 0, AccountEvent(
            f"{prefix}ev-1", acct, T0, PositionChanged(Position("p1", perp(), 2.0, 2900.0))))),
            "risk_inputs"),
        Sample("risk.inputs", acct.encode(), encode(RiskInput(
            "oracle.prices", 1, 7, consensus("ETH", 1))), "risk_inputs"),
        Sample("risk.inputs", acct.encode(), encode(RiskInput(
            "execution.reports", 2, 3, report(acct, 1))), "risk_inputs"),
        Sample("execution.reports", acct.encode(), encode(report(acct, 1)), "execution_reports"),
        Sample("execution.reports", acct2.encode(),
               encode(report(acct2, 2, status=ExecutionStatus.REJECTED)), "execution_reports"),
        Sample("aps.deadletter", f"{prefix}account.events".encode(), encode(DeadLetter(
            "risk", "unknown_instrument", "no such instrument", "account.events", 2, 17,
            f"{prefix}acct-9".encode(), b"\xc3\x01garbage", -1)), "dead_letters"),
        Sample(CHANGELOG, acct.encode(), encode(account_state(acct, 3, ratio=1.4)),
               "account_states"),
        Sample("risk.refusals", acct.encode(), encode(refusal(acct, "cooldown", t=T0 + 7)),
               "refusals"),
        Sample("risk.refusals", acct2.encode(), encode(refusal(
            acct2, "max_notional", rule="margin_ladder[1]+delta_band:ETH", t=T0 + 8)),
            "refusals"),
        Sample("risk.refusals", acct2.encode(), encode(ActionRefused(
            acct2, "vol_scaling:ETH", "degraded", "", {}, T0 + 9)), "refusals"),
        Sample(CHANGELOG, acct2.encode(), encode(account_state(acct2, 1, ratio=None)),
               "account_states"),
    ]
    for i, chain in enumerate(chains):
        out.append(Sample(f"exec.{chain}.commands", acct.encode(),
                          encode(command(acct, i, chain=chain, t=T0 + 10 * i)), "commands"))
    out.append(Sample(f"exec.{chains[0]}.commands", acct2.encode(),
                      encode(top_up(acct2, 0, t=T0 + 5)), "commands"))
    return out


ARCHIVED_AT = 1_700_000_100  # epoch seconds; rows are a pure function of message + this


def insert_messages(backend: ArchiveBackend, messages: list[KafkaMessage]) -> Counter[str]:
    """Map and insert like the archiver does (column-wise, one block per table)."""
    mapper = open_mapper(backend)
    try:
        tables = mapper.map(MessageBatch.of(messages), ARCHIVED_AT)
    finally:
        mapper.close()
    insert_tables(backend, tables)
    return Counter({name: table.num_rows for name, (_, table) in tables.items()})


def insert_messages_per_row(backend: ArchiveBackend,
                            messages: list[KafkaMessage]) -> Counter[str]:
    """Map with the per-row reference (`archive_row`) and insert; rows per table."""
    by_table = reference_rows(messages)
    for spec, rows in by_table.values():
        backend.insert(spec.name, spec.columns, rows)
    return Counter({name: len(rows) for name, (_, rows) in by_table.items()})


def reference_rows(messages: list[KafkaMessage],
                   ) -> dict[str, tuple[TableSpec, list[tuple[Any, ...]]]]:
    """Rows of every message by the per-row reference, per table."""
    by_table: dict[str, tuple[TableSpec, list[tuple[Any, ...]]]] = {}
    for message in messages:
        spec, row = archive_row(message, ARCHIVED_AT)
        by_table.setdefault(spec.name, (spec, []))[1].append(row)
    return by_table


def as_messages(samples: list[Sample], first_offset: int = 0) -> list[KafkaMessage]:
    """Samples with Kafka coordinates: one partition per topic, offsets in order."""
    offsets: dict[str, int] = defaultdict(lambda: first_offset)
    out = []
    for sample in samples:
        offset = offsets[sample.topic]
        offsets[sample.topic] += 1
        out.append(KafkaMessage(sample.topic, 0, offset, sample.key, sample.value,
                                T0 + 5_000 + offset))
    return out
