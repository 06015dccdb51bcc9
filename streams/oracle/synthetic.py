"""Synthetic oracle observations in each feed's native shape, from price paths.

For the bundled scenario, the tests and the benchmark: given a true price path per asset,
every configured feed publishes the way its oracle does.

- Chainlink: a new round when the answer would move by the feed's deviation threshold or
  its heartbeat elapses; the round lands on chain after an inclusion delay (its block
  timestamp becomes ``updatedAt``), round ids are ``(phase << 64) | n`` with a random phase
  and starting round; we receive it a little later.
- Pyth: an update every 400 ms-1 s (at most one per ``publish_time`` second, as Pyth's
  receivers require strictly newer publish times) with a confidence interval and an EMA
  price.
- Sequencer-uptime feeds: an "up" round at the start, then status rounds for outages.

Faults (:class:`Spike`, :class:`Silence`, :class:`SequencerOutage`, :class:`ClockSkew`,
:class:`PhaseChange`) distort chosen feeds. Everything is deterministic for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from streams.domain import ChainlinkRound, OracleObservation, OracleSource, PythPriceUpdate
from streams.oracle.feeds import FeedRegistry, FeedSpec, SequencerFeed
from streams.oracle.normalize import compose_round_id

PricePath = list[tuple[int, float]]
YEAR_MS = 365.0 * 24 * 3600 * 1000
FOREVER_MS = 1 << 62


@dataclass(frozen=True, slots=True)
class ChainProfile:
    """Delays of one chain, in ms: Chainlink trigger -> block, and block/publish -> receipt."""

    inclusion_ms: tuple[int, int]
    receipt_ms: tuple[int, int]


DEFAULT_PROFILES: dict[str, ChainProfile] = {
    "ethereum": ChainProfile(inclusion_ms=(1_000, 24_000), receipt_ms=(200, 2_000)),
    "arbitrum": ChainProfile(inclusion_ms=(250, 2_000), receipt_ms=(100, 800)),
    "solana": ChainProfile(inclusion_ms=(400, 1_200), receipt_ms=(100, 600)),
}
FALLBACK_PROFILE = ChainProfile(inclusion_ms=(1_000, 5_000), receipt_ms=(100, 1_000))


@dataclass(frozen=True, slots=True)
class Spike:
    """Matching feeds publish ``true price * factor`` during [start_ms, end_ms)."""

    chain: str
    start_ms: int
    end_ms: int
    factor: float
    source: OracleSource | None = None
    asset: str | None = None


@dataclass(frozen=True, slots=True)
class Silence:
    """Matching feeds publish nothing during [start_ms, end_ms) (they go stale)."""

    chain: str
    start_ms: int
    end_ms: int
    source: OracleSource | None = None
    asset: str | None = None


@dataclass(frozen=True, slots=True)
class SequencerOutage:
    """The chain's sequencer is down during [start_ms, end_ms): its uptime feed says so and
    its price feeds publish nothing meanwhile."""

    chain: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class ClockSkew:
    """The chain's timestamps (updatedAt, publish_time) run ``offset_ms`` ahead (negative:
    behind) of true time during [start_ms, end_ms)."""

    chain: str
    offset_ms: int
    start_ms: int = 0
    end_ms: int = FOREVER_MS


@dataclass(frozen=True, slots=True)
class PhaseChange:
    """Matching Chainlink feeds move to a new aggregator at ``at_ms``: phase + 1, rounds
    numbered from 1 again."""

    chain: str
    at_ms: int
    asset: str | None = None


Fault = Spike | Silence | SequencerOutage | ClockSkew | PhaseChange


def random_walk_paths(start_prices: Mapping[str, float], start_ms: int, duration_s: int,
                      seed: int, step_ms: int = 1000, annual_vol: float = 0.6
                      ) -> dict[str, PricePath]:
    """One geometric random walk per asset (sorted by name), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    steps = duration_s * 1000 // step_ms + 1
    times = start_ms + np.arange(steps, dtype=np.int64) * step_ms
    sigma = annual_vol * math.sqrt(step_ms / YEAR_MS)
    paths: dict[str, PricePath] = {}
    for asset in sorted(start_prices):
        moves = rng.standard_normal(steps) * sigma
        moves[0] = 0.0
        prices = start_prices[asset] * np.exp(np.cumsum(moves))
        paths[asset] = list(zip(times.tolist(), prices.tolist(), strict=True))
    return paths


def observations_from_paths(paths: Mapping[str, Sequence[tuple[int, float]]],
                            feeds: FeedRegistry, seed: int, *, faults: Iterable[Fault] = (),
                            noise_bps: float = 2.0,
                            pyth_conf_bps: tuple[float, float] = (3.0, 12.0),
                            profiles: Mapping[str, ChainProfile] | None = None
                            ) -> list[OracleObservation]:
    """Every configured feed's observations of the true `paths`, sorted by received_at.

    `paths` maps an asset to ``(epoch ms, price)`` points (the price holds until the next
    point); feeds of assets without a path publish nothing. Sequencer-uptime feeds publish
    when the paths start and around each :class:`SequencerOutage`.
    """
    faults = tuple(faults)
    profiles = {**DEFAULT_PROFILES, **(profiles or {})}
    starts = [path[0][0] for path in paths.values() if path]
    if not starts:
        return []
    start_ms = min(starts)
    keyed: list[tuple[int, str, str, str, int, OracleObservation]] = []
    for index, spec in enumerate(feeds.feeds):
        path = paths.get(spec.asset)
        if not path:
            continue
        rng = np.random.default_rng([seed, index])
        profile = profiles.get(spec.chain, FALLBACK_PROFILE)
        writer = _chainlink_rounds if spec.source is OracleSource.CHAINLINK else _pyth_updates
        for obs in writer(spec, path, rng, profile, faults, noise_bps, pyth_conf_bps):
            keyed.append((obs.received_at, obs.chain, obs.source.value, obs.feed_id, len(keyed),
                          obs))
    for index, seq in enumerate(feeds.sequencers):
        rng = np.random.default_rng([seed, 10_000 + index])
        profile = profiles.get(seq.chain, FALLBACK_PROFILE)
        for obs in _sequencer_rounds(seq, start_ms, rng, profile, faults):
            keyed.append((obs.received_at, obs.chain, obs.source.value, obs.feed_id, len(keyed),
                          obs))
    keyed.sort(key=lambda item: item[:5])
    return [item[5] for item in keyed]


# --- fault helpers -------------------------------------------------------------------------

def _matches(fault: Spike | Silence, spec: FeedSpec) -> bool:
    return (fault.chain == spec.chain and fault.source in (None, spec.source)
            and fault.asset in (None, spec.asset))


def _silent(spec: FeedSpec, faults: tuple[Fault, ...], t: int) -> bool:
    for fault in faults:
        if isinstance(fault, Silence) and _matches(fault, spec) and \
                fault.start_ms <= t < fault.end_ms:
            return True
        if isinstance(fault, SequencerOutage) and fault.chain == spec.chain and \
                fault.start_ms <= t < fault.end_ms:
            return True
    return False


def _factor(spec: FeedSpec, faults: tuple[Fault, ...], t: int) -> float:
    factor = 1.0
    for fault in faults:
        if isinstance(fault, Spike) and _matches(fault, spec) and \
                fault.start_ms <= t < fault.end_ms:
            factor *= fault.factor
    return factor


def _skew(chain: str, faults: tuple[Fault, ...], t: int) -> int:
    return sum(f.offset_ms for f in faults
               if isinstance(f, ClockSkew) and f.chain == chain and f.start_ms <= t < f.end_ms)


def _phase_changes(spec: FeedSpec, faults: tuple[Fault, ...]) -> list[int]:
    return sorted(f.at_ms for f in faults if isinstance(f, PhaseChange)
                  and f.chain == spec.chain and f.asset in (None, spec.asset))


def _uniform(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return int(rng.integers(low, high + 1))


# --- per-oracle writers --------------------------------------------------------------------

def _chainlink_rounds(spec: FeedSpec, path: Sequence[tuple[int, float]], rng: np.random.Generator,
                      profile: ChainProfile, faults: tuple[Fault, ...], noise_bps: float,
                      _conf: tuple[float, float]) -> list[OracleObservation]:
    decimals = -spec.exponent
    scale = 10**decimals
    deviation = spec.deviation_bps / 1e4
    heartbeat_ms = int(spec.heartbeat_s * 1000)
    phase = int(rng.integers(1, 8))
    round_no = int(rng.integers(1_000, 50_000))
    phase_changes = _phase_changes(spec, faults)
    noise = rng.standard_normal(len(path)) * (noise_bps / 1e4)
    out: list[OracleObservation] = []
    last_answer = 0.0
    last_landed = last_received = -FOREVER_MS
    for (t, true_price), eps in zip(path, noise.tolist(), strict=True):
        if t < last_landed or _silent(spec, faults, t):
            continue
        observed = true_price * _factor(spec, faults, t) * (1.0 + eps)
        moved = last_answer == 0.0 or abs(observed / last_answer - 1.0) >= deviation
        if not moved and t - last_landed < heartbeat_ms:
            continue
        landed = t + _uniform(rng, profile.inclusion_ms)
        while phase_changes and phase_changes[0] <= landed:
            phase_changes.pop(0)
            phase, round_no = phase + 1, 0
        round_no += 1
        round_id = str(compose_round_id(phase, round_no))
        updated_s = (landed + _skew(spec.chain, faults, landed)) // 1000
        answer = round(observed * scale)
        body = ChainlinkRound(round_id=round_id, answer=str(answer), started_at=updated_s,
                              updated_at=updated_s, answered_in_round=round_id)
        # one chain's blocks reach us in order, so its rounds do too
        received = max(landed + _uniform(rng, profile.receipt_ms), last_received + 1)
        out.append(OracleObservation(spec.chain, OracleSource.CHAINLINK, spec.feed_id, received,
                                     body))
        last_received = received
        last_answer = answer / scale
        last_landed = landed
    return out


def _pyth_updates(spec: FeedSpec, path: Sequence[tuple[int, float]], rng: np.random.Generator,
                  profile: ChainProfile, faults: tuple[Fault, ...], noise_bps: float,
                  conf_bps: tuple[float, float]) -> list[OracleObservation]:
    times = np.fromiter((t for t, _ in path), dtype=np.int64, count=len(path))
    prices = np.fromiter((p for _, p in path), dtype=np.float64, count=len(path))
    span = int(times[-1] - times[0])
    count = span // 400 + 2
    instants = times[0] + np.cumsum(rng.integers(400, 1001, size=count))
    instants = instants[instants <= times[-1]]
    true = prices[np.searchsorted(times, instants, side="right") - 1]
    noise = rng.standard_normal(len(instants)) * (noise_bps / 1e4)
    conf_frac = rng.uniform(conf_bps[0], conf_bps[1], size=len(instants)) / 1e4
    receipts = rng.integers(profile.receipt_ms[0], profile.receipt_ms[1] + 1, size=len(instants))
    scale = 10.0 ** -spec.exponent
    alpha = 2.0 / (60 + 1)
    out: list[OracleObservation] = []
    last_second = -1
    ema = ema_conf = 0.0
    for t, p, eps, cf, delay in zip(instants.tolist(), true.tolist(), noise.tolist(),
                                    conf_frac.tolist(), receipts.tolist(), strict=True):
        publish_s = (t + _skew(spec.chain, faults, t)) // 1000
        if publish_s <= last_second or _silent(spec, faults, t):
            continue
        observed = p * _factor(spec, faults, t) * (1.0 + eps)
        conf = observed * cf
        ema = observed if ema == 0.0 else ema + alpha * (observed - ema)
        ema_conf = conf if ema_conf == 0.0 else ema_conf + alpha * (conf - ema_conf)
        body = PythPriceUpdate(price=round(observed * scale), conf=max(1, round(conf * scale)),
                               expo=spec.exponent, publish_time=publish_s,
                               ema_price=round(ema * scale),
                               ema_conf=max(1, round(ema_conf * scale)))
        out.append(OracleObservation(spec.chain, OracleSource.PYTH, spec.feed_id, t + delay,
                                     body))
        last_second = publish_s
    return out


def _sequencer_rounds(seq: SequencerFeed, start_ms: int, rng: np.random.Generator,
                      profile: ChainProfile, faults: tuple[Fault, ...]) -> list[OracleObservation]:
    changes = [(start_ms, 0, start_ms - 86_400_000)]
    for fault in sorted((f for f in faults if isinstance(f, SequencerOutage)
                         and f.chain == seq.chain), key=lambda f: f.start_ms):
        changes.append((fault.start_ms, 1, fault.start_ms))
        changes.append((fault.end_ms, 0, fault.end_ms))
    phase, round_no = 1, int(rng.integers(100, 1_000))
    out = []
    for at_ms, status, since_ms in changes:
        round_no += 1
        round_id = str(compose_round_id(phase, round_no))
        updated_s = at_ms // 1000
        body = ChainlinkRound(round_id=round_id, answer=str(status), started_at=since_ms // 1000,
                              updated_at=updated_s, answered_in_round=round_id)
        received = at_ms + _uniform(rng, profile.receipt_ms)
        out.append(OracleObservation(seq.chain, OracleSource.CHAINLINK, seq.feed_id, received,
                                     body))
    return out
