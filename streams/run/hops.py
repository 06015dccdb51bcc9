"""Per-hop latency of a run, from the Kafka timestamps of the records themselves.

The run's monitor reads every topic and keeps, per record that matters, its Kafka
timestamp (the producer's wall clock, ms) and the keys that link records of one decision:

    observation (event time) -> consensus price (asset, event time)
      -> its entry on each risk.inputs partition -> command (header ``aps-input``)
      -> execution report (command id) -> the report's entry on risk.inputs

A hop's latency is the difference of the two records' timestamps: what a user would get
from the archive with SQL (docs/performance.md), computed here from the topics directly.

A command is linked to the risk.inputs entry whose application emitted it (its
``aps-input`` header, streams.app.latency), and through it to that price's observation.
Its provenance names the quote it was priced on, which is usually that price but can be an
earlier one: a later price of another asset settles fills or moves the watermark, and the
accounts it frees are decided on their own asset's latest quote. Measured from that quote
such a command would count the feedback loop (its fills' command -> report -> risk input)
as decision latency; `stale_quotes` gives those commands' figures apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

HOPS = ("tick_to_price", "price_to_risk_input", "risk_input_to_command", "tick_to_command",
        "command_to_report", "report_to_risk_input")


@dataclass(frozen=True, slots=True)
class CommandStamp:
    """What links a command to its cause and its report."""

    ts: int
    partition: int  # risk partition of its account
    asset: str
    price_event_time: int
    trigger: tuple[int, int] | None = None  # risk.inputs (partition, offset) that emitted it


@dataclass
class HopRecords:
    """Kafka timestamps (epoch ms) collected while reading the topics."""

    ticks: dict[int, int] = field(default_factory=dict)          # event time -> first ts
    prices: dict[tuple[str, int], int] = field(default_factory=dict)  # (asset, event time)
    risk_prices: dict[tuple[int, str, int], int] = field(default_factory=dict)
    # risk.inputs (partition, offset) of a price -> (ts, asset, event time)
    risk_price_entries: dict[tuple[int, int], tuple[int, str, int]] = field(
        default_factory=dict)
    commands: dict[str, CommandStamp] = field(default_factory=dict)
    reports: dict[str, int] = field(default_factory=dict)        # command id -> ts
    risk_reports: dict[str, int] = field(default_factory=dict)   # command id -> ts

    @staticmethod
    def first(table: dict, key: object, ts: int) -> None:
        """Keep the earliest timestamp seen for `key`."""
        known = table.get(key)
        if known is None or ts < known:
            table[key] = ts


@dataclass(frozen=True, slots=True)
class HopStats:
    """Latency figures of one hop, ms."""

    hop: str
    count: int
    p50: float
    p99: float
    max: float


def _stats(hop: str, values: Iterable[float]) -> HopStats:
    data = np.fromiter(values, dtype=np.float64)
    if len(data) == 0:
        return HopStats(hop, 0, float("nan"), float("nan"), float("nan"))
    return HopStats(hop, len(data), float(np.percentile(data, 50)),
                    float(np.percentile(data, 99)), float(data.max()))


def hop_latencies(records: HopRecords, partitions: int) -> list[HopStats]:
    """p50/p99/max of every hop, in `HOPS` order (`partitions`: of risk.inputs)."""
    r = records
    tick_to_price = [ts - r.ticks[t] for (_, t), ts in r.prices.items() if t in r.ticks]
    price_to_input = []
    for (asset, t), ts in r.prices.items():
        entries = [r.risk_prices.get((p, asset, t)) for p in range(partitions)]
        if all(e is not None for e in entries):
            price_to_input.append(max(e for e in entries if e is not None) - ts)
    input_to_command, tick_to_command, command_to_report, report_to_input = [], [], [], []
    for command_id, c in r.commands.items():
        entry, event_time = _trigger(r, c)
        if entry is not None:
            input_to_command.append(c.ts - entry)
        tick = r.ticks.get(event_time)
        if tick is not None:
            tick_to_command.append(c.ts - tick)
        report = r.reports.get(command_id)
        if report is not None:
            command_to_report.append(report - c.ts)
            back = r.risk_reports.get(command_id)
            if back is not None:
                report_to_input.append(back - report)
    series = (tick_to_price, price_to_input, input_to_command, tick_to_command,
              command_to_report, report_to_input)
    return [_stats(hop, values) for hop, values in zip(HOPS, series, strict=True)]


def _trigger(records: HopRecords, command: CommandStamp) -> tuple[int | None, int]:
    """(Kafka timestamp, event time) of the price entry on risk.inputs that emitted
    `command`; without its header (or its entry), the entry of its provenance's price."""
    if command.trigger is not None:
        found = records.risk_price_entries.get(command.trigger)
        if found is not None:
            return found[0], found[2]
    return (records.risk_prices.get((command.partition, command.asset,
                                     command.price_event_time)), command.price_event_time)


def stale_quotes(records: HopRecords) -> HopStats:
    """Commands emitted by a later price than the quote they were priced on: their count and
    the time from that quote's entry on risk.inputs to the command (hop ``quote_to_command``).
    """
    values = []
    for c in records.commands.values():
        trigger = records.risk_price_entries.get(c.trigger) if c.trigger else None
        if trigger is None or trigger[1:] == (c.asset, c.price_event_time):
            continue
        quote = records.risk_prices.get((c.partition, c.asset, c.price_event_time))
        if quote is not None:
            values.append(c.ts - quote)
    return _stats("quote_to_command", values)
