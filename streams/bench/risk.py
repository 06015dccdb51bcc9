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

4. the crash: the desk book (`streams.risk.bookgen.generate_desk`: `accounts` accounts
   with 1-5 option and perp positions, all on the benchmark's asset, 3 chains) through the
   bundled BTC crash (a 14% fall over 90 one-second updates after 35 calm ones), every
   command filled at the next update; per update: accounts revalued, policy runs,
   commands, and the time of `apply()` (median of the steepest third of the fall, where
   the most accounts act);
5. the same crash on a 10,000-account desk book with the fast path and with `decide` on
   every account (`fast_policy=False`, the reference): both timed, commands compared;
6. four engines of `accounts / 4` accounts each receiving the same updates (a worker's
   partitions), without and with `SharedValuations`.

Last line: RESULT option_evals_per_s=... book_revalue_ms=... naive_ratio=...
crash_update_ms=... crash_commands=... crash_evaluations=... crash_revalued=...
shared_update_ms=... unshared_update_ms=... reference_ratio=...
"""

from __future__ import annotations

import gc
import hashlib
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from streams.domain import (
    CommandAction,
    ConsensusPrice,
    ExecutionReport,
    ExecutionStatus,
    OptionType,
    PriceStatus,
    RiskInput,
    ScalingCommand,
    Side,
)
from streams.risk.bookgen import BookAccount, account_states, generate_accounts, generate_desk
from streams.risk.engine import EngineConfig, PartitionEngine
from streams.risk.margin import MarginParams, StressGrid
from streams.risk.pricing import option_greeks
from streams.risk.valuations import SharedValuations
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


# --- the crash: a price move where accounts act ----------------------------------------------

CRASH_WARMUP = 35
CRASH_UPDATES = 90
CRASH_DROP = 0.14
PARTITIONS = 4


@dataclass
class CrashFigures:
    """Per timed update: ms, accounts revalued, policy runs, commands."""

    ms: list[float] = field(default_factory=list)
    revalued: list[int] = field(default_factory=list)
    evaluated: list[int] = field(default_factory=list)
    commands: list[int] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    report_ms: float = 0.0
    reports: int = 0
    batched: int = 0


def crash_path(start_ms: int = 1_000_000) -> list[tuple[int, float]]:
    """BTC: `CRASH_WARMUP` calm one-second updates (55% volatility), then the bundled
    crash's fall: 14% in `CRASH_UPDATES` one-second updates along a smooth step (the
    bundled BTC crash; `make run` replays it at 3x, which changes the wall time between
    updates, not the moves)."""
    rng = np.random.default_rng(5)
    out = []
    price, t = SPOT, start_ms
    step = 0.55 * math.sqrt(1_000 / YEAR_MS)
    for _ in range(CRASH_WARMUP):
        price *= math.exp(step * float(rng.standard_normal()))
        t += 1_000
        out.append((t, price))
    start = price
    for i in range(1, CRASH_UPDATES + 1):
        f = i / CRASH_UPDATES
        t += 1_000
        noise = math.exp(step * float(rng.standard_normal()))
        out.append((t, start * (1.0 - CRASH_DROP) ** (3 * f * f - 2 * f ** 3) * noise))
    return out


def _fill(command: ScalingCommand, offset: int, time_ms: int) -> RiskInput:
    """The executor's FILLED report of `command` at its reference price (unsigned: it goes
    straight to the engine, no wire, so no signature is verified)."""
    if command.action is CommandAction.TOP_UP:
        filled, price, amount = 0.0, 0.0, command.amount
    else:
        sign = 1.0 if command.side is Side.BUY else -1.0
        filled, price, amount = sign * command.quantity, command.trigger["reference_price"], 0.0
    return RiskInput("bench.reports", 0, offset, ExecutionReport(
        f"rep-{command.command_id}", command.command_id, command.account_id, command.chain,
        ExecutionStatus.FILLED, "", command.action, command.instrument, filled, price, 0.0,
        amount, time_ms, "bench"))


@dataclass
class _Run:
    """One set of engines fed the crash (a worker's partitions)."""

    engines: Sequence[PartitionEngine]
    figures: CrashFigures = field(default_factory=CrashFigures)
    queues: list[list[ScalingCommand]] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.sha256)
    offset: int = 0

    def reports(self, t: int) -> None:
        """Fill every command of the last update (not timed)."""
        start = time.perf_counter()
        for engine, queue in zip(self.engines, self.queues, strict=True):
            for command in queue:
                self.offset += 1
                engine.apply(_fill(command, self.offset, t - 500))
            self.figures.reports += len(queue)
        self.figures.report_ms += (time.perf_counter() - start) * 1e3

    def price(self, n: int, t: int, price: float, timed: bool, digest: bool) -> None:
        """Apply update `n` to every engine; record its figures if `timed`."""
        engines, f = self.engines, self.figures
        before = [(e.counters.revaluations, e.counters.evaluations) for e in engines]
        batched = sum(e.batch_stats.accounts for e in engines)
        start = time.perf_counter()
        out = [engine.apply(RiskInput("bench.prices", 0, n, ConsensusPrice(
            ASSET, t, price, price * 1e-4, PriceStatus.OK, 0.0, ["bench"], [], [], n)))
            for engine in engines]
        ms = (time.perf_counter() - start) * 1e3
        self.queues = out
        if digest:
            self.digest.update(repr(out).encode())
        for engine in engines:
            engine.take_dirty()
            engine.take_refusals()
        if not timed:
            return
        f.ms.append(ms)
        f.revalued.append(sum(e.counters.revaluations - b[0]
                              for e, b in zip(engines, before, strict=True)))
        f.evaluated.append(sum(e.counters.evaluations - b[1]
                               for e, b in zip(engines, before, strict=True)))
        f.batched += sum(e.batch_stats.accounts for e in engines) - batched
        f.commands.append(sum(map(len, out)))
        for part in out:
            for c in part:
                f.reasons[c.reason.value] = f.reasons.get(c.reason.value, 0) + 1


def run_crash(runs: Sequence[Sequence[PartitionEngine]], path: Sequence[tuple[int, float]],
              digest: bool = False) -> list[tuple[CrashFigures, str]]:
    """Feed `path` to every set of engines in `runs` (each set: a worker's partitions,
    every engine of it receiving every update), each command filled at the next update,
    and time the crash updates of each set (all its engines together).

    The sets go in lockstep, in alternating order, so that they share the machine's load
    alike; the engines' objects are frozen out of the garbage collector (`_frozen_gc`).
    With `digest`, also a SHA-256 of every command each set emitted (to compare runs
    without keeping hundreds of thousands of commands alive).
    """
    sets = [_Run(engines, queues=[[] for _ in engines]) for engines in runs]
    _frozen_gc()
    for n, (t, price) in enumerate(path, start=1):
        for run in sets if n % 2 else sets[::-1]:
            run.reports(t)
            run.price(n, t, price, n > CRASH_WARMUP, digest)
    gc.unfreeze()
    return [(run.figures, run.digest.hexdigest()) for run in sets]


REFERENCE_ACCOUNTS = 10_000


def _steep(figures: CrashFigures) -> list[float]:
    """ms of the middle third of the fall (its steepest updates)."""
    third = len(figures.ms) // 3
    return figures.ms[third: 2 * third]


def _against_reference(config: EngineConfig) -> tuple[float, float, bool]:
    """The crash on a `REFERENCE_ACCOUNTS` desk book with the fast path and with `decide`
    on every account: median ms of the steepest updates, and whether the commands match."""
    book = generate_desk(REFERENCE_ACCOUNTS, seed=11, home=ASSET)
    runs = [[PartitionEngine(config, account_states(book), fast_policy=fast)]
            for fast in (True, False)]
    (fast, fast_digest), (reference, digest) = run_crash(runs, crash_path(), digest=True)
    return (statistics.median(_steep(fast)), statistics.median(_steep(reference)),
            fast_digest == digest)


def _crash(accounts: int, config: EngineConfig) -> tuple[CrashFigures, float]:
    """The crash on the desk book, one engine, fast path; median ms of its steepest
    updates."""
    print(f"generating the desk book: {accounts:,} accounts, 1-5 option and perp positions"
          f" each, all on {ASSET}, 3 chains ...", flush=True)
    book = generate_desk(accounts, seed=11, home=ASSET)
    n_positions = sum(len(a.positions) for a in book)
    n_options = sum(p.instrument.is_option for a in book for p in a.positions)
    print(f"desk book: {n_positions:,} positions ({n_options:,} options)", flush=True)
    engine = PartitionEngine(config, account_states(book))
    [(figures, _)] = run_crash([[engine]], crash_path())
    return figures, statistics.median(_steep(figures))


def _frozen_gc() -> None:
    """Move everything alive (the loaded engines) out of the cyclic collector's reach, as
    a worker would after restoring its tables: otherwise every full collection walks the
    100,000 accounts' objects, and its pauses land on whichever update allocates then."""
    gc.collect()
    gc.freeze()


def _print_crash(label: str, f: CrashFigures) -> None:
    med = statistics.median
    print(f"{label}: {med(_steep(f)):.1f} ms median per update over the steepest third of"
          f" the fall, {med(f.ms):.1f} ms over all {len(f.ms)} crash updates"
          f" (min {min(f.ms):.1f}, max {max(f.ms):.1f}); per update median"
          f" {med(f.revalued):,.0f} accounts revalued, {med(f.evaluated):,.0f} policy runs,"
          f" {med(f.commands):,.0f} commands (max {max(f.commands):,}); in all"
          f" {sum(f.commands):,} commands {dict(sorted(f.reasons.items()))},"
          f" {f.batched:,} of {sum(f.evaluated):,} policy runs vectorized;"
          f" {f.reports:,} fill reports applied between updates ({f.report_ms:,.0f} ms)")


def _shared(book: Sequence[BookAccount], config: EngineConfig) -> tuple[float, float, bool]:
    """Median ms per update (all engines) for `PARTITIONS` engines, without and with
    SharedValuations (both sets in lockstep), over the first half of the fall; and whether
    the commands match."""
    path = crash_path()[: CRASH_WARMUP + CRASH_UPDATES // 2]
    shared = SharedValuations()
    runs = [[PartitionEngine(config, account_states(book[p::PARTITIONS]),
                             valuations=shared if share else None)
             for p in range(PARTITIONS)] for share in (False, True)]
    (alone, alone_digest), (sharing, digest) = run_crash(runs, path, digest=True)
    return statistics.median(alone.ms), statistics.median(sharing.ms), alone_digest == digest


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

    fast_ms, reference_ms, same = _against_reference(config)
    print(f"the crash on {REFERENCE_ACCOUNTS:,} accounts: {fast_ms:.1f} ms per update with the"
          f" fast path, {reference_ms:.1f} ms with decide on every account"
          f" ({reference_ms / fast_ms:.1f}x; commands {'identical' if same else 'DIFFERENT'})",
          flush=True)
    crash, crash_ms = _crash(accounts, config)
    _print_crash(f"crash on {accounts:,} accounts ({ASSET} -{CRASH_DROP:.0%} in"
                 f" {CRASH_UPDATES} one-second updates after {CRASH_WARMUP} calm ones,"
                 f" fills at the next update)", crash)
    book = generate_desk(accounts, seed=11, home=ASSET)
    alone, shared, same = _shared(book, config)
    print(f"{PARTITIONS} engines x {accounts // PARTITIONS:,} accounts, every engine receiving"
          f" the same updates (the first half of the fall): {alone:.1f} ms per update for all"
          f" four without sharing, {shared:.1f} ms with SharedValuations"
          f" (commands {'identical' if same else 'DIFFERENT'})")
    print(f"RESULT option_evals_per_s={rate:.0f} book_revalue_ms={steady:.2f}"
          f" naive_ratio={ratio:.1f} crash_update_ms={crash_ms:.2f}"
          f" crash_commands={statistics.median(crash.commands):.0f}"
          f" crash_evaluations={statistics.median(crash.evaluated):.0f}"
          f" crash_revalued={statistics.median(crash.revalued):.0f}"
          f" shared_update_ms={shared:.2f} unshared_update_ms={alone:.2f}"
          f" reference_ratio={reference_ms / fast_ms:.2f}")

