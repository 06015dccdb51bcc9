"""`aps bench risk`: option Greek throughput and full-book revaluation vs a naive loop.

Prints figures, asserts nothing. Three measurements, all on one core (numpy's elementwise
kernels and scipy's sparse products are single-threaded):

1. option Greek evaluations per second: `option_greeks` on `evals` random options (half
   BSM, half Black-76), best of three passes;
2. book revaluation: the generated book (`accounts` x `positions`, all on one asset,
   with scaling rules) loaded into a `PartitionEngine`; the time of `apply()` for one
   consensus price, i.e. mark, Greeks, stress grid, margin, ratio of every account and the
   policy's screening, median of several small price moves. The generated book marks its
   options on one volatility surface (like a venue), so each distinct option is valued
   once; the same book with a distinct volatility on every option (nothing shared) is
   timed too and printed;
3. the naive loop: the same valuation written as a per-position Python loop (scalar
   math, same stress grid and margin formulas), timed on a sample of accounts and
   extrapolated linearly to the whole book (said in the output).

Last line: RESULT option_evals_per_s=... book_revalue_ms=... naive_ratio=...
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from streams.domain import ConsensusPrice, OptionType, PriceStatus, RiskInput
from streams.risk.bookgen import BookAccount, account_states, generate_accounts
from streams.risk.engine import EngineConfig, PartitionEngine
from streams.risk.margin import MarginParams, StressGrid
from streams.risk.pricing import option_greeks
from streams.risk.volatility import YEAR_MS

ASSET = "BTC"
SPOT = 60_000.0
CONFIDENCE = 5.0
NAIVE_SAMPLE = 2_000
UPDATES = 7


def _greek_rate(evals: int) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    S = rng.uniform(0.5, 1.5, evals) * SPOT
    K = rng.uniform(0.7, 1.3, evals) * SPOT
    T = rng.uniform(1 / 365, 1.0, evals)
    sigma = rng.uniform(0.2, 1.2, evals)
    call = rng.random(evals) < 0.5
    b76 = rng.random(evals) < 0.5
    option_greeks(S[:1000], K[:1000], T[:1000], 0.0, 0.0, sigma[:1000], call[:1000],
                  b76[:1000])
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        option_greeks(S, K, T, 0.0, 0.0, sigma, call, b76)
        best = min(best, time.perf_counter() - start)
    return evals / best, best


def _price(price: float, sequence: int) -> RiskInput:
    return RiskInput("bench.prices", 0, sequence, ConsensusPrice(
        ASSET, 1_000 * sequence, price, CONFIDENCE, PriceStatus.OK, 0.0, ["bench"], [], [],
        sequence))


def _time_updates(engine: PartitionEngine) -> tuple[float, float, int]:
    """(first update ms, median later update ms, commands) of a loaded engine."""
    start = time.perf_counter()
    commands = len(engine.apply(_price(SPOT, 1)))
    first = (time.perf_counter() - start) * 1e3
    engine.take_dirty()
    times = []
    for seq in range(2, 2 + UPDATES):
        price = SPOT * (1.0 + 0.0005 * (-1) ** seq)
        start = time.perf_counter()
        commands += len(engine.apply(_price(price, seq)))
        times.append((time.perf_counter() - start) * 1e3)
    return first, statistics.median(times), commands


def _distinct_vols(book: Sequence[BookAccount]) -> list[BookAccount]:
    """The same book with a different mark volatility on every option position."""
    out = []
    n = 0
    for account in book:
        positions = []
        for p in account.positions:
            if p.instrument.is_option:
                n += 1
                p = replace(p, implied_vol=(p.implied_vol or 0.6) * (1.0 + 1e-7 * n))
            positions.append(p)
        out.append(replace(account, positions=positions))
    return out


# --- the naive loop ------------------------------------------------------------------------

def _ncdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _scalar_option(F: float, K: float, T: float, sigma: float, call: bool) -> tuple[
        float, float, float, float, float]:
    """Price, delta, gamma, vega, theta of one option on F.

    With r = q = 0 (the engine's default) BSM on spot and Black-76 on the forward agree.
    """
    w = 1.0 if call else -1.0
    if T <= 0 or sigma * math.sqrt(T) <= 1e-12:
        return max(w * (F - K), 0.0), (w if w * (F - K) > 0 else 0.0), 0.0, 0.0, 0.0
    sqrt_t = math.sqrt(T)
    d1 = math.log(F / K) / (sigma * sqrt_t) + 0.5 * sigma * sqrt_t
    d2 = d1 - sigma * sqrt_t
    pdf = math.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi)
    price = w * (F * _ncdf(w * d1) - K * _ncdf(w * d2))
    return (price, w * _ncdf(w * d1), pdf / (F * sigma * sqrt_t), F * pdf * sqrt_t,
            -F * pdf * sigma / (2 * sqrt_t))


def naive_revalue(book: Sequence[BookAccount], spot: float, conf: float, now_ms: int,
                  grid: StressGrid, params: MarginParams, k: float = 2.0) -> list[float]:
    """Margin ratio of each account, one position at a time in plain Python."""
    moves = [spot * m + k * conf * e for m, e in zip(grid.moves, grid.edges, strict=True)]
    shifts = list(grid.shifts)
    ratios = []
    for account in book:
        equity = sum(c.balance for c in account.collateral)
        pnl = [0.0] * len(moves)
        option_delta = net = gross = short = 0.0
        for p in account.positions:
            inst = p.instrument
            q = p.quantity
            if not inst.is_option:
                equity += q * (spot - p.entry_price)
                net += q
                gross += abs(q)
                continue
            T = ((inst.expiry_ms or 0) - now_ms) / YEAR_MS
            vol = p.implied_vol if p.implied_vol is not None else 0.6
            call = inst.option_type is OptionType.CALL
            mark, delta, _gamma, _vega, _theta = _scalar_option(spot, inst.strike or 0.0, T,
                                                                vol, call)
            equity += q * (mark - p.entry_price)
            option_delta += q * delta
            if q < 0:
                short += -q
            for j, (move, shift) in enumerate(zip(moves, shifts, strict=True)):
                scen_vol = max(vol + shift, min(vol, grid.min_vol))
                value = _scalar_option(max(spot + move, spot * 1e-9), inst.strike or 0.0, T,
                                       scen_vol, call)[0]
                pnl[j] += q * (value - mark)
        hedge = min(max(net, min(0.0, -option_delta)), max(0.0, -option_delta))
        option_loss = max(0.0, -min(v + hedge * m for v, m in zip(pnl, moves, strict=True)))
        full = [v + net * m for v, m in zip(pnl, moves, strict=True)]
        edge = max(0.0, -min(full[j] for j in grid.edge_scenarios))
        mm = params.linear_mm_rate * gross * (spot + k * conf) \
            + max(params.option_floor_rate * short * spot, option_loss)
        ratios.append((equity - edge) / mm if mm > 0 else 1e308)
    return ratios


def run(evals: int, accounts: int, positions: int) -> None:
    """Print the figures and the RESULT line (see the module docstring)."""
    rate, seconds = _greek_rate(evals)
    print(f"option Greeks (price, delta, gamma, vega, theta, rho; half BSM, half Black-76):"
          f" {evals:,} options in {seconds * 1e3:.1f} ms = {rate / 1e6:.2f} M evals/s"
          f" on one core (best of 3)")

    print(f"generating the book: {accounts:,} accounts x {positions} positions on {ASSET} ...",
          flush=True)
    book = generate_accounts({ASSET: SPOT}, accounts, seed=11, positions_per_account=positions)
    n_positions = sum(len(a.positions) for a in book)
    n_options = sum(p.instrument.is_option for a in book for p in a.positions)
    config = EngineConfig()
    engine = PartitionEngine(config, account_states(book))
    first, steady, commands = _time_updates(engine)
    distinct = len(engine.book.caches[0].keys)
    print(f"book: {accounts:,} accounts, {n_positions:,} positions ({n_options:,} options on"
          f" {distinct} distinct instruments x volatilities), stress grid"
          f" {config.grid.size} scenarios, scaling rules on every account")
    print(f"revaluation after one price update (engine.apply: marks, Greeks, stress, margin,"
          f" ratio, policy screening): {steady:.1f} ms median of {UPDATES}"
          f" (first update, building the distinct-option index: {first:.0f} ms;"
          f" {commands} commands)")

    unshared = PartitionEngine(config, account_states(_distinct_vols(book)))
    first_u, steady_u, _ = _time_updates(unshared)
    print(f"same book with nothing shared ({len(unshared.book.caches[0].keys):,} distinct"
          f" options): {steady_u:.1f} ms per update (first {first_u:.0f} ms)")

    sample = book[: min(NAIVE_SAMPLE, len(book))]
    start = time.perf_counter()
    naive_revalue(sample, SPOT, CONFIDENCE, 1_000, config.grid, config.margin)
    naive_sample = (time.perf_counter() - start) * 1e3
    naive_full = naive_sample * len(book) / len(sample)
    ratio = naive_full / steady
    print(f"naive per-position Python loop (scalar math, same grid and margin): {naive_sample:.0f}"
          f" ms for a sample of {len(sample):,} accounts, extrapolated to {naive_full:,.0f} ms"
          f" for the book = {ratio:.0f}x the engine")
    print(f"RESULT option_evals_per_s={rate:.0f} book_revalue_ms={steady:.2f}"
          f" naive_ratio={ratio:.1f}")

