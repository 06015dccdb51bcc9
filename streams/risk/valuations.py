"""Per-unit option valuations shared by the engines of one process.

A worker holds one `PartitionEngine` per partition, and every one of them receives the same
consensus price. The expensive part of a revaluation that does not depend on the partition
is the unit table of each distinct option (mark, Greeks and the PnL of every stress
scenario, `streams.risk.stress.option_unit_table`). `SharedValuations` computes each row of
it once per quote and hands the same numbers to every engine that asks.

A reuse can never be wrong because the key is everything a row depends on: the quote
(asset, price, confidence, event time), the rate and the stress grid, and the row's option
terms (call/put, model, strike, expiry, mark volatility, confidence multiplier k). A row's
values depend on nothing else (the pricing kernels are element-wise), so a row computed
for one engine is bit-identical to the row another engine would compute in its own table.

Memory is bounded: per asset the rows of the latest `QUOTES_PER_ASSET` quotes are kept (a
worker that is behind applies several prices of one asset to one partition before the next
partition gets to the first of them, so the latest alone would not do). A new quote's
table starts with every row asked for under the quote before it, computed in one call (the
engines of a worker hold mostly the same options from one price to the next), so four
engines pay the fixed cost of one pricing call instead of four.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from streams.risk.margin import FloatArray, StressGrid
from streams.risk.stress import option_unit_table, unit_columns

# columns of an option key row (streams.risk.book: call, black76, strike, expiry, vol, k)
_K_CALL, _K_B76, _K_STRIKE, _K_EXPIRY, _K_VOL, _K_CONF = range(6)


@dataclass(frozen=True, slots=True)
class QuoteKey:
    """Everything of a revaluation that is common to all rows of one asset's table."""

    asset: str
    price: float
    confidence: float
    event_time: int
    rate: float
    grid: StressGrid


@dataclass
class _Entry:
    quote: QuoteKey
    index: dict[bytes, int] = field(default_factory=dict)
    table: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    size: int = 0
    keys: list[FloatArray] = field(default_factory=list)  # rows of the table, in order


@dataclass
class ValuationStats:
    """How often rows were reused (`hits`) and computed (`computed`), and table lookups."""

    lookups: int = 0
    hits: int = 0
    computed: int = 0


QUOTES_PER_ASSET = 16


class SharedValuations:
    """Unit tables of option rows, computed once per (asset, quote) for all engines."""

    def __init__(self) -> None:
        self._entries: dict[str, OrderedDict[QuoteKey, _Entry]] = {}
        self.stats = ValuationStats()

    def _entry(self, quote: QuoteKey) -> _Entry:
        quotes = self._entries.setdefault(quote.asset, OrderedDict())
        entry = quotes.get(quote)
        if entry is not None:
            return entry
        latest = next(reversed(quotes.values())) if quotes else None
        entry = quotes[quote] = _Entry(quote, table=np.empty((0, unit_columns(quote.grid))))
        if len(quotes) > QUOTES_PER_ASSET:
            quotes.popitem(last=False)
        if latest is not None and latest.size and latest.quote.grid == quote.grid:
            self._compute(entry, np.vstack(latest.keys), list(latest.index))
        return entry

    def unit_table(self, quote: QuoteKey, keys: FloatArray) -> FloatArray:
        """Unit table of the option rows `keys` (n x 6) at `quote`, row i for keys[i]."""
        entry = self._entry(quote)
        self.stats.lookups += 1
        keys = np.ascontiguousarray(keys, dtype=np.float64)
        raw = [row.tobytes() for row in keys]
        where = np.fromiter((entry.index.get(b, -1) for b in raw), dtype=np.int64,
                            count=len(raw))
        missing = np.flatnonzero(where < 0)
        if len(missing):
            distinct: dict[bytes, int] = {}
            for i in missing:
                distinct.setdefault(raw[i], int(i))
            first = list(distinct.values())
            self._compute(entry, keys[first], list(distinct))
            where[missing] = [entry.index[raw[i]] for i in missing]
        self.stats.hits += len(raw) - len(missing)
        return entry.table[where]

    def _compute(self, entry: _Entry, keys: FloatArray, raw: list[bytes]) -> None:
        """Rows for `keys` (`raw`: their bytes, distinct and in order) at the entry's quote."""
        quote = entry.quote
        rows = option_unit_table(
            spot=quote.price, kc=keys[:, _K_CONF] * quote.confidence,
            strike=keys[:, _K_STRIKE], expiry_ms=keys[:, _K_EXPIRY], vol=keys[:, _K_VOL],
            is_call=keys[:, _K_CALL] > 0.5, is_black76=keys[:, _K_B76] > 0.5,
            now_ms=quote.event_time, rate=quote.rate, grid=quote.grid)
        need = entry.size + len(rows)
        if need > len(entry.table):
            grown = np.empty((max(need, 2 * len(entry.table)), rows.shape[1]))
            grown[: entry.size] = entry.table[: entry.size]
            entry.table = grown
        entry.table[entry.size: need] = rows
        for offset, key in enumerate(raw):
            entry.index[key] = entry.size + offset
        entry.keys.append(keys)
        entry.size = need
        self.stats.computed += len(rows)

    def assets(self) -> list[str]:
        """Assets with a cached quote."""
        return sorted(self._entries)

    def quotes(self, asset: str) -> int:
        """Quotes of `asset` whose rows are kept (at most QUOTES_PER_ASSET)."""
        return len(self._entries.get(asset, ()))
