"""The columnar book: every position of a partition in numpy arrays, revalued per asset.

Three tables, all plain arrays indexed by integers:

- rows (one per position): account, group, asset, option terms, quantity, entry price;
- groups (one per account x underlying): the sums a price update produces (value, Greeks,
  maintenance, initial, stress and adverse-edge losses);
- accounts: collateral, confidence multiplier k, and the totals (equity, margin, ratio).

Each row also carries the quantity its account's commands in flight will add (`flight`, set
by the engine); `Book.project` values a set of accounts with those quantities included, the
way the policy's projection sees them, so the engine can screen accounts with commands in
flight without running the policy on each of them.

A price update of asset A revalues the rows of A in one pass: each distinct option once
(streams.risk.stress), quantities summed per group with `bincount` and one sparse product,
the margin of every group of A at once (streams.risk.margin), then the account totals.

Determinism: sums are taken in an order that does not depend on how the book was built.
Rows of one group are summed in row order, and a restored book adds an account's positions
in the order they were persisted (which is row order: rows are only ever appended, and
compaction keeps their order). Distinct options are sorted by value, and an account's
groups are added in asset-name order. A book rebuilt from persisted state therefore
produces bit-identical figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from streams.domain import Instrument, OptionType, Position, PricingModel
from streams.risk.margin import FloatArray, MarginParams, StressGrid, group_margin, margin_ratio
from streams.risk.stress import (
    DELTA,
    FIRST_SCENARIO,
    GAMMA,
    MARK,
    THETA,
    VEGA,
    distinct_rows,
    option_unit_table,
    unit_columns,
)
from streams.risk.valuations import QuoteKey, SharedValuations

IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

# columns of the distinct-option key (sorted lexicographically)
_K_CALL, _K_B76, _K_STRIKE, _K_EXPIRY, _K_VOL, _K_CONF = range(6)


@dataclass(frozen=True, slots=True)
class Quote:
    """The mark of one asset used for a revaluation."""

    price: float
    confidence: float
    event_time: int


@dataclass(frozen=True, slots=True)
class Projected:
    """Figures of some accounts with their commands in flight counted (`Book.project`).

    Per account (in the order given): `ratio`, the margin ratio, and `unsure`, True where the
    figures cannot be trusted (a position on an asset without a current valuation). Per
    group of those accounts: `groups` (book group ids), `owner` (position of the group's
    account in the input), `asset`, and the group's delta, gamma, gross option quantity
    (`option_abs`), vega-weighted gross quantity (`vega_abs`) and vega-and-volatility
    weighted gross quantity (`vega_vol`).
    """

    ratio: FloatArray
    unsure: BoolArray
    groups: IntArray
    owner: IntArray
    asset: IntArray
    delta: FloatArray
    gamma: FloatArray
    option_abs: FloatArray
    vega_abs: FloatArray
    vega_vol: FloatArray


class Columns:
    """Named numpy columns that grow by doubling."""

    def __init__(self, columns: dict[str, np.dtype], capacity: int = 64) -> None:
        self.size = 0
        self._dtypes = columns
        self.cols: dict[str, np.ndarray] = {
            name: np.zeros(capacity, dtype=dtype) for name, dtype in columns.items()
        }

    def append(self) -> int:
        """Index of a new zeroed entry."""
        if self.size == len(next(iter(self.cols.values()))):
            for name, col in self.cols.items():
                grown = np.zeros(2 * len(col), dtype=col.dtype)
                grown[: self.size] = col[: self.size]
                self.cols[name] = grown
        self.size += 1
        return self.size - 1

    def extend_to(self, size: int) -> None:
        """Zeroed entries up to `size` (no change if there are that many already)."""
        capacity = len(next(iter(self.cols.values())))
        if size > capacity:
            capacity = max(size, 2 * capacity)
            for name, col in self.cols.items():
                grown = np.zeros(capacity, dtype=col.dtype)
                grown[: self.size] = col[: self.size]
                self.cols[name] = grown
        self.size = max(self.size, size)

    def keep(self, index: IntArray) -> None:
        """Keep only the entries `index` (in that order)."""
        for name, col in self.cols.items():
            kept = col[index]
            fresh = np.zeros(max(64, 2 * len(kept)), dtype=col.dtype)
            fresh[: len(kept)] = kept
            self.cols[name] = fresh
        self.size = len(index)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]


@dataclass
class AssetCache:
    """Structure of one asset's rows, rebuilt only when positions are added or removed."""

    stale: bool = True
    rows: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    groups: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    accounts: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    local_group: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    is_option: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    keys: FloatArray = field(default_factory=lambda: np.zeros((0, 6)))
    pair_of_option: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pair_indptr: IntArray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    pair_unit: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    units: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    quote: Quote | None = None


class Book:
    """Columnar positions, groups and accounts of one partition."""

    def __init__(self, grid: StressGrid, rate: float = 0.0) -> None:
        self.grid = grid
        self.rate = rate
        self.rows = Columns({
            "account": np.int64, "group": np.int64, "asset": np.int64, "active": np.bool_,
            "option": np.bool_, "call": np.bool_, "b76": np.bool_, "strike": np.float64,
            "expiry": np.int64, "vol": np.float64, "q": np.float64, "entry": np.float64,
            "base": np.float64, "unit": np.int64, "flight": np.float64,
        })
        self.groups = Columns({
            "account": np.int64, "asset": np.int64, "value": np.float64,
            "delta": np.float64, "gamma": np.float64, "vega": np.float64,
            "theta": np.float64, "vega_abs": np.float64, "vega_vol": np.float64,
            "option_abs": np.float64, "option_base": np.float64, "mm": np.float64,
            "im": np.float64, "stress": np.float64, "edge": np.float64,
        })
        self.accounts = Columns({
            "collateral": np.float64, "k": np.float64, "equity": np.float64,
            "equity_adverse": np.float64, "mm": np.float64, "im": np.float64,
            "stress": np.float64, "ratio": np.float64, "valued_at": np.int64,
        })
        self.row_ids: list[str] = []
        self.row_instruments: list[Instrument] = []
        self.row_of: dict[tuple[int, str], int] = {}
        self.account_rows: list[list[int]] = []
        self.group_of: dict[tuple[int, int], int] = {}
        self.account_groups: list[list[int]] = []
        self.asset_names: list[str] = []
        self.asset_code: dict[str, int] = {}
        self.caches: list[AssetCache] = []
        self.margin_params: list[MarginParams] = []
        self.default_vol = 0.6
        # unit tables shared with the other engines of the process (streams.risk.valuations)
        self.valuations: SharedValuations | None = None
        self._totals: tuple[IntArray, IntArray, IntArray] | None = None

    # --- structure -------------------------------------------------------------------------

    def asset(self, name: str, params: MarginParams) -> int:
        """Code of asset `name`, registering it on first sight."""
        code = self.asset_code.get(name)
        if code is None:
            code = self.asset_code[name] = len(self.asset_names)
            self.asset_names.append(name)
            self.caches.append(AssetCache())
            self.margin_params.append(params)
            self._totals = None
        return code

    def add_account(self, k: float) -> int:
        """Index of a new account with confidence multiplier `k`."""
        index = self.accounts.append()
        self.accounts["k"][index] = k
        self.accounts["ratio"][index] = margin_ratio(0.0, 0.0)
        self.account_rows.append([])
        self.account_groups.append([])
        return index

    def set_collateral(self, account: int, total: float) -> None:
        """Posted collateral of an account, USD (the sum over its chains)."""
        self.accounts["collateral"][account] = total

    def set_k(self, account: int, k: float) -> None:
        """Confidence multiplier of an account's adverse edge (its ladder's confidence_k)."""
        if self.accounts["k"][account] != k:
            self.accounts["k"][account] = k
            for row in self.account_rows[account]:
                if self.rows["active"][row]:
                    self.caches[int(self.rows["asset"][row])].stale = True

    def _group(self, account: int, asset: int) -> int:
        key = (account, asset)
        group = self.group_of.get(key)
        if group is None:
            group = self.group_of[key] = self.groups.append()
            self.groups["account"][group] = account
            self.groups["asset"][group] = asset
            self.account_groups[account].append(group)
            self._totals = None
        return group

    def upsert(self, account: int, position: Position, asset: int, base: float) -> int:
        """Row of `position` (created, or rewritten in place), marking its asset stale."""
        key = (account, position.position_id)
        row = self.row_of.get(key)
        if row is None:
            row = self.rows.append()
            self.row_of[key] = row
            self.row_ids.append(position.position_id)
            self.row_instruments.append(position.instrument)
            self.account_rows[account].append(row)
        else:
            self.caches[int(self.rows["asset"][row])].stale = True
            self.row_instruments[row] = position.instrument
        inst = position.instrument
        r = self.rows
        r["account"][row] = account
        r["asset"][row] = asset
        r["group"][row] = self._group(account, asset)
        r["active"][row] = True
        r["option"][row] = inst.is_option
        r["call"][row] = inst.option_type is OptionType.CALL
        r["b76"][row] = inst.model is PricingModel.BLACK76
        r["strike"][row] = inst.strike or 0.0
        r["expiry"][row] = inst.expiry_ms or 0
        vol = position.implied_vol
        r["vol"][row] = self.default_vol if vol is None else vol
        r["q"][row] = position.quantity
        r["entry"][row] = position.entry_price
        r["base"][row] = base
        self.caches[asset].stale = True
        return row

    def set_quantity(self, row: int, quantity: float, entry: float, base: float) -> None:
        """New quantity/entry/base of a row; the structure of its asset is unchanged."""
        self.rows["q"][row] = quantity
        self.rows["entry"][row] = entry
        self.rows["base"][row] = base

    def remove(self, account: int, position_id: str) -> None:
        """Deactivate a position's row."""
        row = self.row_of.pop((account, position_id), None)
        if row is None:
            return
        self.rows["active"][row] = False
        self.rows["q"][row] = 0.0
        self.account_rows[account].remove(row)
        self.caches[int(self.rows["asset"][row])].stale = True

    def maybe_compact(self) -> bool:
        """Drop inactive rows once they are most of the table (keeps row order)."""
        total = self.rows.size
        active = np.flatnonzero(self.rows["active"][:total])
        if total < 4096 or len(active) > total // 2:
            return False
        remap = np.full(total, -1, dtype=np.int64)
        remap[active] = np.arange(len(active))
        self.rows.keep(active)
        self.row_ids = [self.row_ids[i] for i in active]
        self.row_instruments = [self.row_instruments[i] for i in active]
        self.row_of = {key: int(remap[row]) for key, row in self.row_of.items()}
        self.account_rows = [[int(remap[row]) for row in rows] for rows in self.account_rows]
        for cache in self.caches:
            cache.stale = True
        return True

    # --- valuation -------------------------------------------------------------------------

    def stale_assets(self) -> list[int]:
        """Assets whose structure changed since their last revaluation."""
        return [code for code, cache in enumerate(self.caches) if cache.stale]

    def _rebuild(self, asset: int) -> AssetCache:
        r = self.rows
        n = r.size
        rows = np.flatnonzero(r["active"][:n] & (r["asset"][:n] == asset)).astype(np.int64)
        groups, local = np.unique(r["group"][rows], return_inverse=True)
        is_option = r["option"][rows]
        opt_rows = rows[is_option]
        k = self.accounts["k"][r["account"][opt_rows]]
        keys = np.column_stack([
            r["call"][opt_rows], r["b76"][opt_rows], r["strike"][opt_rows],
            r["expiry"][opt_rows], r["vol"][opt_rows], k,
        ]).astype(np.float64)
        uniq, inverse = distinct_rows(keys)
        r["unit"][opt_rows] = inverse
        # (group, distinct option) pairs: a CSR pattern whose columns are in value order
        local_opt = local[is_option]
        n_units = max(len(uniq), 1)
        pair_keys = local_opt.astype(np.int64) * n_units + inverse
        pairs, pair_of_option = np.unique(pair_keys, return_inverse=True)
        pair_group = pairs // n_units
        indptr = np.zeros(len(groups) + 1, dtype=np.int64)
        np.add.at(indptr, pair_group + 1, 1)
        cache = AssetCache(
            stale=False, rows=rows, groups=groups.astype(np.int64),
            accounts=np.unique(self.groups["account"][groups]).astype(np.int64),
            local_group=local.astype(np.int64), is_option=is_option, keys=uniq,
            pair_of_option=pair_of_option.reshape(-1).astype(np.int64),
            pair_indptr=np.cumsum(indptr), pair_unit=(pairs % n_units).astype(np.int64),
        )
        # groups of this asset that lost all their rows are worth nothing now
        all_groups = np.flatnonzero(self.groups["asset"][: self.groups.size] == asset)
        empty = np.setdiff1d(all_groups, cache.groups, assume_unique=True)
        for name in ("value", "delta", "gamma", "vega", "theta", "vega_abs", "vega_vol",
                     "option_abs", "option_base", "mm", "im", "stress", "edge"):
            self.groups[name][empty] = 0.0
        self.caches[asset] = cache
        return cache

    def revalue(self, asset: int, quote: Quote) -> IntArray:
        """Revalue every row of `asset` at `quote`; return the accounts it touched."""
        cache = self.caches[asset]
        if cache.stale:
            cache = self._rebuild(asset)
        r = self.rows
        rows = cache.rows
        spot, conf, now = quote.price, quote.confidence, quote.event_time
        keys = cache.keys
        if self.valuations is not None:
            units = self.valuations.unit_table(
                QuoteKey(self.asset_names[asset], spot, conf, now, self.rate, self.grid), keys)
        else:
            units = option_unit_table(
                spot=spot, kc=keys[:, _K_CONF] * conf, strike=keys[:, _K_STRIKE],
                expiry_ms=keys[:, _K_EXPIRY], vol=keys[:, _K_VOL],
                is_call=keys[:, _K_CALL] > 0.5, is_black76=keys[:, _K_B76] > 0.5, now_ms=now,
                rate=self.rate, grid=self.grid,
            )
        cache.units = units
        cache.quote = quote
        n_groups = len(cache.groups)
        q = r["q"][rows]
        absq = np.abs(q)
        is_opt = cache.is_option
        lin = ~is_opt
        local = cache.local_group

        opt_q = q[is_opt]
        n_units = len(keys)
        if n_units:
            n_pairs = len(cache.pair_unit)
            pair_q = np.bincount(cache.pair_of_option, opt_q, minlength=n_pairs)
            pair_abs = np.bincount(cache.pair_of_option, np.abs(opt_q), minlength=n_pairs)
            shape = (n_groups, n_units)
            signed = sp.csr_matrix((pair_q, cache.pair_unit, cache.pair_indptr), shape=shape)
            absolute = sp.csr_matrix((pair_abs, cache.pair_unit, cache.pair_indptr),
                                     shape=shape)
            option_sums = np.asarray(signed @ units)
            vega_units = np.column_stack([units[:, VEGA], units[:, VEGA] * keys[:, _K_VOL]])
            abs_sums = np.asarray(absolute @ vega_units)
        else:
            option_sums = np.zeros((n_groups, unit_columns(self.grid)))
            abs_sums = np.zeros((n_groups, 2))

        def per_group(weights: FloatArray) -> FloatArray:
            return np.bincount(local, weights, minlength=n_groups)

        linear_net = per_group(np.where(lin, q, 0.0))
        linear_gross = per_group(np.where(lin, absq, 0.0))
        short_options = per_group(np.where(is_opt & (q < 0), absq, 0.0))
        entry_value = per_group(q * r["entry"][rows])
        option_abs = per_group(np.where(is_opt, absq, 0.0))
        option_base = per_group(np.where(is_opt, np.abs(r["base"][rows]), 0.0))

        groups = cache.groups
        g_accounts = self.groups["account"][groups]
        kc = self.accounts["k"][g_accounts] * conf
        params = self.margin_params[asset]
        risk = group_margin(
            spot=spot, kc=kc, option_pnl=option_sums[:, FIRST_SCENARIO:],
            option_delta=option_sums[:, DELTA], linear_net=linear_net,
            linear_gross=linear_gross, short_options=short_options,
            linear_mm_rate=params.linear_mm_rate, linear_im_rate=params.linear_im_rate,
            option_floor_rate=params.option_floor_rate,
            option_im_factor=params.option_im_factor, grid=self.grid,
        )
        g = self.groups
        g["value"][groups] = option_sums[:, MARK] + spot * linear_net - entry_value
        g["delta"][groups] = option_sums[:, DELTA] + linear_net
        g["gamma"][groups] = option_sums[:, GAMMA]
        g["vega"][groups] = option_sums[:, VEGA]
        g["theta"][groups] = option_sums[:, THETA]
        g["vega_abs"][groups] = abs_sums[:, 0]
        g["vega_vol"][groups] = abs_sums[:, 1]
        g["option_abs"][groups] = option_abs
        g["option_base"][groups] = option_base
        g["mm"][groups] = risk.maintenance
        g["im"][groups] = risk.initial
        g["stress"][groups] = risk.stress_loss
        g["edge"][groups] = risk.edge_loss
        self.accounts["valued_at"][cache.accounts] = now
        return cache.accounts

    def refresh_totals(self) -> None:
        """Account totals from their groups (each account's groups in asset-name order)."""
        perm, starts, owners = self._total_layout()
        a = self.accounts
        n = a.size
        if len(perm) == 0:
            a["equity"][:n] = a["collateral"][:n]
            a["equity_adverse"][:n] = a["collateral"][:n]
            a["mm"][:n] = a["im"][:n] = a["stress"][:n] = 0.0
            a["ratio"][:n] = margin_ratio(a["equity_adverse"][:n], a["mm"][:n])
            return
        g = self.groups

        def total(name: str) -> FloatArray:
            out = np.zeros(n)
            out[owners] = np.add.reduceat(g[name][perm], starts)
            return out

        value = total("value")
        equity = a["collateral"][:n] + value
        a["equity"][:n] = equity
        a["equity_adverse"][:n] = equity - total("edge")
        a["mm"][:n] = total("mm")
        a["im"][:n] = total("im")
        a["stress"][:n] = total("stress")
        a["ratio"][:n] = margin_ratio(a["equity_adverse"][:n], a["mm"][:n])

    def _total_layout(self) -> tuple[IntArray, IntArray, IntArray]:
        if self._totals is None:
            n = self.groups.size
            rank = np.argsort(np.argsort(np.array(self.asset_names, dtype=object)))
            accounts = self.groups["account"][:n]
            ranks = rank[self.groups["asset"][:n]] if n else np.zeros(0, dtype=np.int64)
            perm = np.lexsort((ranks, accounts)).astype(np.int64)
            sorted_accounts = accounts[perm]
            starts = np.flatnonzero(np.r_[True, sorted_accounts[1:] != sorted_accounts[:-1]])
            if n == 0:
                starts = np.zeros(0, dtype=np.int64)
            self._totals = (perm, starts.astype(np.int64), sorted_accounts[starts])
        return self._totals

    # --- projection --------------------------------------------------------------------------

    def project(self, accounts: IntArray, extra_equity: FloatArray) -> Projected:
        """Margin ratio and per-group Greeks of `accounts` with the rows' `flight` added to
        their quantities and `extra_equity` (top-ups in flight) to their equity.

        The same model as `revalue` on the latest valuation of every asset (the per-unit
        option table of its last price update), summed in another order: figures agree
        with the policy's projection up to rounding, which is what a screen needs.
        """
        r = self.rows
        n_acc = len(accounts)
        position = np.full(self.accounts.size, -1, dtype=np.int64)
        position[accounts] = np.arange(n_acc)
        size = r.size
        rows = np.flatnonzero(r["active"][:size] & (position[r["account"][:size]] >= 0))
        assets = r["asset"][rows]
        valued = np.array([not c.stale and c.quote is not None for c in self.caches] or [True])
        unsure = np.zeros(n_acc, dtype=bool)
        unsure[position[r["account"][rows[~valued[assets]]]]] = True
        rows = rows[valued[assets]]
        assets = assets[valued[assets]]
        groups, local = np.unique(r["group"][rows], return_inverse=True)
        local = local.reshape(-1)
        n_groups = len(groups)
        q = r["q"][rows] + r["flight"][rows]
        absq = np.abs(q)
        is_opt = r["option"][rows]
        width = unit_columns(self.grid)
        units = np.zeros((int(is_opt.sum()), width))
        opt_rows, opt_assets = rows[is_opt], assets[is_opt]
        for code in np.unique(opt_assets):
            mine = opt_assets == code
            units[mine] = self.caches[int(code)].units[r["unit"][opt_rows[mine]]]
        opt_local = local[is_opt]
        opt_q = q[is_opt]
        vol = r["vol"][opt_rows]
        # per-group sums of q x unit (every column) and |q| x vega (x vol), one bincount each
        option_sums = _sum_by(opt_local, opt_q[:, None] * units, n_groups)
        gross_vega = np.abs(opt_q) * units[:, VEGA]
        vega_sums = _sum_by(opt_local, np.column_stack([gross_vega, gross_vega * vol]),
                            n_groups)

        def per_group(weights: FloatArray) -> FloatArray:
            return np.bincount(local, weights, minlength=n_groups)

        lin = ~is_opt
        linear_net = per_group(np.where(lin, q, 0.0))
        g_asset = self.groups["asset"][groups]
        g_account = self.groups["account"][groups]
        quotes = [c.quote or Quote(0.0, 0.0, 0) for c in self.caches]
        spot = np.array([quote.price for quote in quotes] or [0.0])[g_asset]
        conf = np.array([quote.confidence for quote in quotes] or [0.0])[g_asset]

        def rate(name: str) -> FloatArray:
            return np.array([getattr(p, name) for p in self.margin_params] or [0.0])[g_asset]

        risk = group_margin(
            spot=spot, kc=self.accounts["k"][g_account] * conf,
            option_pnl=option_sums[:, FIRST_SCENARIO:], option_delta=option_sums[:, DELTA],
            linear_net=linear_net, linear_gross=per_group(np.where(lin, absq, 0.0)),
            short_options=per_group(np.where(is_opt & (q < 0), absq, 0.0)),
            linear_mm_rate=rate("linear_mm_rate"), linear_im_rate=rate("linear_im_rate"),
            option_floor_rate=rate("option_floor_rate"),
            option_im_factor=rate("option_im_factor"), grid=self.grid,
        )
        owner = position[g_account]
        edge = np.bincount(owner, risk.edge_loss, minlength=n_acc)
        maintenance = np.bincount(owner, risk.maintenance, minlength=n_acc)
        equity = self.accounts["equity"][accounts] + extra_equity - edge
        return Projected(
            ratio=margin_ratio(equity, maintenance), unsure=unsure, groups=groups,
            owner=owner, asset=g_asset, delta=option_sums[:, DELTA] + linear_net,
            gamma=option_sums[:, GAMMA], option_abs=per_group(np.where(is_opt, absq, 0.0)),
            vega_abs=vega_sums[:, 0], vega_vol=vega_sums[:, 1],
        )

    # --- reading -----------------------------------------------------------------------------

    def account_groups_sorted(self, account: int) -> list[int]:
        """Groups of an account in asset-name order."""
        return sorted(self.account_groups[account],
                      key=lambda g: self.asset_names[int(self.groups["asset"][g])])

    def unit_row(self, row: int) -> FloatArray | None:
        """Per-unit mark, Greeks and scenario PnL of an option row (None for linear rows)."""
        if not self.rows["option"][row]:
            return None
        cache = self.caches[int(self.rows["asset"][row])]
        return cache.units[int(self.rows["unit"][row])]

    def active_rows(self, account: int) -> Sequence[int]:
        """Rows of an account in row order."""
        return self.account_rows[account]


def _sum_by(index: IntArray, values: FloatArray, n: int) -> FloatArray:
    """Row sums of `values` (2-D) by `index` into `n` rows."""
    width = values.shape[1]
    flat = (index[:, None] * width + np.arange(width)).reshape(-1)
    return np.bincount(flat, values.reshape(-1), minlength=n * width).reshape(n, width)
