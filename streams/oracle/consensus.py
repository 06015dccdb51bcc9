"""Cross-chain oracle consensus: raw observations in, one trusted price per asset out.

The engine is pure and deterministic: its decisions depend only on the observations, in
log order, and their event time (``received_at``). No wall clock, no randomness, no
dependence on dict order; the same log gives the same outputs, byte for byte.

For each observation, ``observe`` either refuses it (a *rejection*, for the dead-letter
topic, or a *drop*, only counted; see :mod:`streams.oracle.reasons`) or accepts it as the
feed's latest value and re-evaluates that asset's consensus at the observation's event time:

1. Sources that count: feeds with a value, on a healthy chain (sequencer up and past its
   grace period), fresh (age within the feed's heartbeat plus slack) and, for Pyth, with a
   confidence interval no wider than ``max_confidence_bps``.
2. Weighted median of their prices; weights are the configured weight scaled down for
   sources less certain than ``confidence_ref_bps`` (Pyth conf, Chainlink deviation).
3. Outlier guard: a source further than ``outlier_bps`` (beyond its own uncertainty) from
   that median is excluded, if the remaining sources hold a strict majority of the weight;
   without such a majority the sources disagree and the asset is HALTED.
4. Price = weighted median of the remaining sources; dispersion = their range in bps;
   status from the quorum and the dispersion (see ``ConsensusConfig``).

Staleness and grace periods also move with event time: when a used source turns stale or a
chain's grace period ends, the affected asset is re-evaluated at that instant, before the
next observation that reaches it (a *review*), so a silent feed degrades the status even
if nothing else about that asset arrives.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple

from streams.domain import (
    ChainlinkRound,
    ConsensusAssetState,
    ConsensusPrice,
    ConsensusState,
    ExcludedSource,
    OracleFeedState,
    OracleObservation,
    OracleSource,
    PriceStatus,
    PythPriceUpdate,
)
from streams.errors import DomainError
from streams.oracle import reasons
from streams.oracle.feeds import ConsensusConfig, FeedRegistry, FeedSpec, SequencerFeed
from streams.oracle.normalize import (
    ChainlinkFields,
    check_positive,
    normalize_chainlink,
    split_round_id,
    to_float,
    validate_pyth,
)

# the first rounds of a new aggregator a proxy may show (they start at 1; a few may be
# missed between two observations)
MAX_NEW_PHASE_ROUND = 100
NEVER = (1 << 63) - 1
NO_DATA_MS = -1
_CHAINLINK = OracleSource.CHAINLINK
_PYTH = OracleSource.PYTH
_OK, _DEGRADED, _HALTED = PriceStatus.OK, PriceStatus.DEGRADED, PriceStatus.HALTED
_STATUS_KEY = {s: f"prices.{s.value}" for s in PriceStatus}
_EXCLUDED_KEY = {r: f"excluded.{r}" for r in reasons.EXCLUSION_REASONS}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an observation was not used: a reason code and a human-readable detail."""

    reason: str
    detail: str

    @property
    def dead_letter(self) -> bool:
        """True if this refusal belongs in the dead-letter topic."""
        return reasons.is_dead_letter(self.reason)


class Outcome(NamedTuple):
    """What one observation caused.

    ``prices``: consensus outputs, in order (reviews first, then the observed asset, or
    every asset when a chain's health changed). ``rejection``: set when the observation is
    bad input for the dead-letter topic. ``dropped``: set when it was only counted
    (duplicate, out of order, stale on arrival). At most one of the two is set.
    """

    prices: list[ConsensusPrice]
    rejection: Refusal | None = None
    dropped: Refusal | None = None

    @property
    def accepted(self) -> bool:
        """True if the observation became its feed's latest value."""
        return self.rejection is None and self.dropped is None

    @property
    def refusal(self) -> Refusal | None:
        """The rejection or the drop, whichever happened."""
        return self.rejection or self.dropped


class _Chain:
    """Runtime state of one chain: clock tolerance and sequencer status."""

    __slots__ = ("name", "sequencer", "skew_ms")

    def __init__(self, name: str, skew_ms: int) -> None:
        self.name = name
        self.skew_ms = skew_ms
        self.sequencer: _Feed | None = None

    def exclusion(self, now: int) -> str | None:
        """Why this chain's feeds do not count at `now`, or None if it is healthy."""
        seq = self.sequencer
        if seq is None or seq.published_ms == NO_DATA_MS:
            return None
        if seq.mantissa != 0:
            return reasons.SEQUENCER_DOWN
        if now < seq.started_ms + seq.grace_ms:
            return reasons.SEQUENCER_GRACE
        return None

    def grace_end(self) -> int:
        """Event time at which the current grace period ends (valid while in grace)."""
        seq = self.sequencer
        assert seq is not None
        return seq.started_ms + seq.grace_ms


class _Feed:
    """Runtime state of one feed (a price feed or a sequencer-uptime feed)."""

    __slots__ = ("asset", "base_weight", "bit", "chain", "conf", "conf_bps", "deviation_frac",
                 "divisor", "exclusions", "exponent", "feed_id", "grace_ms", "halfwidth",
                 "label", "mantissa", "phase_from", "price", "published_ms", "received_ms",
                 "round_id", "scale_exponent", "source", "stale_after_ms", "stale_at",
                 "started_ms", "weight")

    def __init__(self, chain: _Chain, source: OracleSource, feed_id: str) -> None:
        self.chain = chain
        self.source = source
        self.feed_id = feed_id
        self.asset: _Asset | None = None
        self.label = ""
        self.bit = 0
        self.exclusions: dict[str, ExcludedSource] = {}
        self.stale_after_ms = NEVER
        self.grace_ms = 0
        self.deviation_frac = 0.0
        self.base_weight = 1.0
        self.scale_exponent = 0
        self.divisor = 1
        self.round_id: int | None = None
        # last round of the previous phase while a phase change is unconfirmed
        self.phase_from: int | None = None
        self.mantissa = 0
        self.exponent = 0
        self.conf = 0
        self.published_ms = NO_DATA_MS
        self.started_ms = NO_DATA_MS
        self.received_ms = NO_DATA_MS
        self.price = 0.0
        self.halfwidth = 0.0
        self.conf_bps = 0.0
        self.weight = 1.0
        self.stale_at = NEVER

    def describe(self) -> str:
        """chain/source/feed_id, for refusal details."""
        return f"{self.chain.name}/{self.source.value.lower()}/{self.feed_id}"


class _Asset:
    """Runtime output state of one asset."""

    __slots__ = ("feeds", "has_data", "labels", "last_price", "name", "review_at", "sequence")

    def __init__(self, name: str) -> None:
        self.name = name
        self.feeds: list[_Feed] = []
        self.labels: dict[int, list[str]] = {}
        self.sequence = 0
        self.last_price = 0.0
        self.review_at = NEVER
        self.has_data = False


# candidates come in label order and list.sort is stable: ties in price stay in label order
_PRICE_ORDER = attrgetter("price")
_Health = tuple[tuple[str, ...], dict[str, str], int]
_SOURCE_ORDER = attrgetter("source")


def _weighted_median(feeds: list[_Feed]) -> float:
    """Weighted median of feeds sorted by price: the rule of
    :func:`streams.oracle.aggregate.weighted_median`, over feed objects to spare the hot path
    two list copies (tests hold the two equal)."""
    half = 0.0
    for feed in feeds:
        half += feed.weight
    half /= 2.0
    cumulative = 0.0
    last = len(feeds) - 1
    for i, feed in enumerate(feeds):
        cumulative += feed.weight
        if cumulative > half or i == last:
            return feed.price
        if cumulative == half:
            return (feed.price + feeds[i + 1].price) / 2.0
    raise ValueError("no feeds")


class ConsensusEngine:
    """The consensus stage, pure and deterministic (see the module docstring).

    ``config`` defaults to the registry's ``[consensus]`` table; ``snapshot`` restores the
    state saved by :meth:`snapshot` so a restarted worker continues exactly.
    """

    def __init__(self, feeds: FeedRegistry, config: ConsensusConfig | None = None,
                 snapshot: ConsensusState | None = None) -> None:
        self.feeds = feeds
        self.config = config or feeds.consensus
        cfg = self.config
        self._outlier_frac = cfg.outlier_bps / 1e4
        self._clock = -1
        self._clock_claims: dict[str, int] = {}
        self._next_review = NEVER
        self._counters: defaultdict[str, int] = defaultdict(int)
        self._health_cache: tuple[int, int, _Health] | None = None
        self._chains = {name: _Chain(name, round(spec.max_clock_skew_s * 1000))
                        for name, spec in sorted(feeds.chains.items())}
        self._sequenced = [c for c in self._chains.values()
                           if feeds.chains[c.name].sequencer is not None]
        self._assets = {name: _Asset(name) for name in feeds.assets}
        self._asset_list = list(self._assets.values())
        self._states: dict[tuple[str, OracleSource, str], _Feed] = {}
        for spec in feeds.feeds:
            self._add_price_feed(spec)
        for seq in feeds.sequencers:
            self._add_sequencer(seq)
        self._max_advance_ms = round(cfg.max_clock_advance_s * 1000) or 2 * max(
            [60_000, *(f.stale_after_ms for f in self._states.values() if f.asset)])
        if snapshot is not None:
            self._restore(snapshot)

    # --- set-up ---------------------------------------------------------------------------

    def _add_price_feed(self, spec: FeedSpec) -> None:
        chain = self._chains[spec.chain]
        feed = _Feed(chain, spec.source, spec.feed_id)
        feed.asset = self._assets[spec.asset]
        feed.label = spec.label
        feed.exclusions = {r: ExcludedSource(spec.label, r) for r in reasons.EXCLUSION_REASONS}
        feed.deviation_frac = spec.deviation_bps / 1e4
        feed.base_weight = spec.weight
        feed.scale_exponent = spec.exponent
        feed.divisor = 10**-spec.exponent if spec.exponent <= 0 else 1
        feed.stale_after_ms = self._stale_after_ms(spec, chain)
        feed.bit = 1 << len(feed.asset.feeds)
        feed.asset.feeds.append(feed)
        self._register(feed)

    def _stale_after_ms(self, spec: FeedSpec, chain: _Chain) -> int:
        cfg = self.config
        if spec.max_age_s is not None:
            return round(spec.max_age_s * 1000)
        allowance = (spec.heartbeat_s * (1 + cfg.staleness_slack_ratio) + cfg.staleness_slack_s)
        return round(allowance * 1000) + chain.skew_ms

    def _add_sequencer(self, spec: SequencerFeed) -> None:
        chain = self._chains[spec.chain]
        feed = _Feed(chain, _CHAINLINK, spec.feed_id)
        feed.grace_ms = round(spec.grace_s * 1000)
        chain.sequencer = feed
        self._register(feed)

    def _register(self, feed: _Feed) -> None:
        self._states[(feed.chain.name, feed.source, feed.feed_id)] = feed

    def _find(self, obs: OracleObservation) -> _Feed | None:
        """The feed of an observation whose feed id is not spelled as in the registry."""
        spec = self.feeds.lookup(obs.chain, obs.source, obs.feed_id)
        if spec is None:
            return None
        return self._states[(spec.chain, obs.source, spec.feed_id)]

    # --- the public API -------------------------------------------------------------------

    @property
    def clock(self) -> int:
        """Event time of the latest accepted observation (epoch ms), -1 before any."""
        return self._clock

    @property
    def counters(self) -> dict[str, int]:
        """Cumulative counters, sorted by name (observations, accepted, rejected.<reason>,
        dropped.<reason>, prices, prices.<status>, excluded.<reason>, reviews, ...)."""
        return {key: n for key, n in sorted(self._counters.items()) if n}

    def unhealthy_chains(self, at: int | None = None) -> list[str]:
        """Chains whose feeds do not count at event time `at` (default: the engine clock)."""
        now = self._clock if at is None else at
        return [c.name for c in self._sequenced if c.exclusion(now) is not None]

    def observe(self, obs: OracleObservation) -> Outcome:
        """Apply one observation; return the consensus outputs it caused or why it was refused.

        Never raises on bad input: every refusal is returned with a reason code.
        """
        counters = self._counters
        counters["observations"] += 1
        feed = self._states.get((obs.chain, obs.source, obs.feed_id)) or self._find(obs)
        if feed is None:
            return self._refuse(reasons.UNKNOWN_FEED,
                                f"no feed {obs.source.value.lower()} {obs.feed_id!r} on chain "
                                f"{obs.chain!r} in the feed registry")
        received = obs.received_at
        if self._clock >= 0 and received > self._clock + self._max_advance_ms \
                and not self._corroborated(feed.chain.name, received):
            return self._refuse(reasons.CLOCK_JUMP, f"{feed.describe()}: received_at "
                                f"{received} is {received - self._clock} ms after the clock "
                                f"(at most {self._max_advance_ms} ms unless feeds of "
                                f"{self.config.clock_jump_chains} chains report it)")
        now = received if received > self._clock else self._clock
        body = obs.body
        try:
            if obs.source is _CHAINLINK:
                if type(body) is not ChainlinkRound:
                    raise DomainError(reasons.SOURCE_MISMATCH, "CHAINLINK observation without "
                                      "a Chainlink round body")
                fields = normalize_chainlink(body)
                self._check_round(feed, fields, received, now)
            else:
                if type(body) is not PythPriceUpdate:
                    raise DomainError(reasons.SOURCE_MISMATCH, "PYTH observation without a "
                                      "Pyth price update body")
                self._check_pyth(feed, body, received, now)
        except DomainError as exc:
            return self._refuse(exc.reason, f"{feed.describe()}: {exc.detail}")
        counters["accepted"] += 1
        self._clock = now
        prices = self._run_reviews(now) if now >= self._next_review else []
        if feed.asset is None:
            self._apply_sequencer(feed, fields, received, now, prices)
        else:
            if type(body) is ChainlinkRound:
                if feed.round_id is not None and fields.phase > split_round_id(feed.round_id)[0]:
                    self._bump("phase_changes")
                    feed.phase_from = feed.round_id
                elif feed.phase_from is not None and fields.aggregator_round > 1 and \
                        fields.phase > split_round_id(feed.phase_from)[0]:
                    feed.phase_from = None  # the new aggregator published again: confirmed
                self._store(feed, fields.round_id, fields.answer, feed.scale_exponent,
                            0, fields.updated_at * 1000, fields.started_at * 1000, received)
            else:
                ms = body.publish_time * 1000
                self._store(feed, None, body.price, body.expo, body.conf, ms, ms, received)
            prices.append(self._evaluate(feed.asset, now))
        return Outcome(prices)

    def _corroborated(self, chain: str, received: int) -> bool:
        """Record `chain`'s claim that event time is `received`; True once chains enough
        claim times within the allowed advance of each other (the claims are then spent)."""
        claims = self._clock_claims
        claims[chain] = max(received, claims.get(chain, received))
        close = [c for c, t in claims.items() if abs(t - received) <= self._max_advance_ms]
        if len(close) < self.config.clock_jump_chains:
            return False
        claims.clear()
        self._bump("clock_jumps")
        return True

    def refuse_input(self, reason: str, detail: str) -> Outcome:
        """Count input an adapter could not even turn into an observation (malformed Avro or
        JSON ...), so the counters cover every input; returns the refusal as an Outcome."""
        self._bump("observations")
        return self._refuse(reason, detail)

    def snapshot(self) -> ConsensusState:
        """The engine's state as an Avro record (aps.ConsensusState), sorted for stable bytes."""
        feeds = [
            OracleFeedState(
                chain=f.chain.name, source=f.source.value, feed_id=f.feed_id,
                round_id="" if f.round_id is None else str(f.round_id),
                mantissa=str(f.mantissa), exponent=f.exponent, conf=f.conf,
                published_at=f.published_ms, started_at=f.started_ms,
                received_at=f.received_ms,
                phase_from="" if f.phase_from is None else str(f.phase_from))
            for _, f in sorted(self._states.items(), key=lambda kv: (kv[0][0], kv[0][1].value,
                                                                      kv[0][2]))
            if f.published_ms != NO_DATA_MS
        ]
        assets = [ConsensusAssetState(a.name, a.sequence, a.last_price,
                                      -1 if a.review_at == NEVER else a.review_at)
                  for a in self._asset_list if a.has_data]
        return ConsensusState(clock=self._clock, feeds=feeds, assets=assets,
                              counters=self.counters, clock_claims=dict(self._clock_claims))

    # --- validation -----------------------------------------------------------------------

    def _check_round(self, feed: _Feed, fields: ChainlinkFields, received: int, now: int) -> None:
        if feed.asset is None:
            if fields.answer not in (0, 1):
                raise DomainError(reasons.INVALID_SEQUENCER_STATUS,
                                  f"sequencer status {fields.answer} is neither 0 (up) nor 1 "
                                  f"(down)")
            if fields.started_at == 0:
                raise DomainError(reasons.EMPTY_ROUND, "sequencer round with startedAt 0")
        else:
            check_positive(fields.answer)
        updated_ms = fields.updated_at * 1000
        if updated_ms > received + feed.chain.skew_ms:
            raise DomainError(reasons.FUTURE_TIMESTAMP,
                              f"updatedAt {fields.updated_at} is {updated_ms - received} ms after "
                              f"receipt (tolerance {feed.chain.skew_ms} ms)")
        last = feed.round_id
        if last is not None and self._phase_rule(feed, fields, updated_ms):
            return
        if last is not None:
            if fields.round_id == last:
                if (fields.answer == feed.mantissa and updated_ms == feed.published_ms
                        and fields.started_at * 1000 == feed.started_ms):
                    raise DomainError(reasons.DUPLICATE, f"round {last} again")
                raise DomainError(reasons.CONFLICTING_ROUND,
                                  f"round {last} seen before with a different answer or times")
            if fields.round_id < last:
                raise DomainError(reasons.ROUND_BACKWARDS,
                                  f"round {fields.round_id} {split_round_id(fields.round_id)} "
                                  f"is older than round {last} {split_round_id(last)}")
            if updated_ms < feed.published_ms:
                raise DomainError(reasons.TIMESTAMP_BACKWARDS,
                                  f"round {fields.round_id} updatedAt {fields.updated_at} is "
                                  f"before the previous round's {feed.published_ms // 1000}")
        if feed.asset is not None and now - updated_ms > feed.stale_after_ms:
            raise DomainError(reasons.STALE, f"round {fields.round_id} is {now - updated_ms} ms "
                              f"old on arrival (limit {feed.stale_after_ms} ms)")

    def _phase_rule(self, feed: _Feed, fields: ChainlinkFields, updated_ms: int) -> bool:
        """Apply the aggregator's phase rules; True when the round is accepted by them.

        A proxy moves to a new aggregator by adding one to its phase, and the new
        aggregator's rounds start again at 1. So a round of a higher phase is accepted only
        as phase + 1 with an aggregator round at most MAX_NEW_PHASE_ROUND (else
        ``phase_jump``), and only tentatively: while the previous phase's aggregator keeps
        publishing newer rounds, the change was not real, and such a round takes the feed
        back to that phase (counted as ``phase_reverts``). A forged round can therefore
        cost a feed one round, never the feed.
        """
        assert feed.round_id is not None
        phase, _ = split_round_id(feed.round_id)
        if fields.phase > phase:
            if fields.phase != phase + 1 or fields.aggregator_round > MAX_NEW_PHASE_ROUND:
                raise DomainError(reasons.PHASE_JUMP, (
                    f"round {fields.round_id} is phase {fields.phase} round "
                    f"{fields.aggregator_round}; after phase {phase} only phase {phase + 1} "
                    f"round 1..{MAX_NEW_PHASE_ROUND} can follow"))
            return False  # the usual checks (time must not go backwards) apply
        previous = feed.phase_from
        if previous is None or fields.phase != split_round_id(previous)[0]:
            return False
        if fields.round_id > previous and updated_ms > feed.published_ms:
            self._bump("phase_reverts")
            feed.phase_from = None
            return True
        return False

    def _check_pyth(self, feed: _Feed, body: PythPriceUpdate, received: int, now: int) -> None:
        validate_pyth(body)
        published_ms = body.publish_time * 1000
        if published_ms > received + feed.chain.skew_ms:
            raise DomainError(reasons.FUTURE_TIMESTAMP,
                              f"publish_time {body.publish_time} is {published_ms - received} ms "
                              f"after receipt (tolerance {feed.chain.skew_ms} ms)")
        if published_ms <= feed.published_ms:
            same = (published_ms == feed.published_ms and body.price == feed.mantissa
                    and body.conf == feed.conf and body.expo == feed.exponent)
            if same:
                raise DomainError(reasons.DUPLICATE, f"update of {body.publish_time} again")
            raise DomainError(reasons.OUT_OF_ORDER,
                              f"publish_time {body.publish_time} is not after the last applied "
                              f"{feed.published_ms // 1000}")
        if now - published_ms > feed.stale_after_ms:
            raise DomainError(reasons.STALE, f"update is {now - published_ms} ms old on arrival "
                              f"(limit {feed.stale_after_ms} ms)")

    def _refuse(self, reason: str, detail: str) -> Outcome:
        refusal = Refusal(reason, detail)
        if refusal.dead_letter:
            self._bump(f"rejected.{reason}")
            return Outcome([], rejection=refusal)
        self._bump(f"dropped.{reason}")
        return Outcome([], dropped=refusal)

    def _bump(self, key: str) -> None:
        self._counters[key] += 1

    # --- state ----------------------------------------------------------------------------

    def _store(self, feed: _Feed, round_id: int | None, mantissa: int, exponent: int, conf: int,
               published_ms: int, started_ms: int, received_ms: int) -> None:
        """Make a value the feed's latest, with its derived float figures."""
        feed.round_id = round_id
        feed.mantissa = mantissa
        feed.exponent = exponent
        feed.conf = conf
        feed.published_ms = published_ms
        feed.started_ms = started_ms
        feed.received_ms = received_ms
        if feed.asset is None:
            return
        if exponent == feed.scale_exponent:
            divisor = feed.divisor
            price = mantissa / divisor
            halfwidth = conf / divisor if conf else price * feed.deviation_frac
        else:
            price = to_float(mantissa, exponent)
            halfwidth = to_float(conf, exponent) if conf else price * feed.deviation_frac
        feed.price = price
        feed.halfwidth = halfwidth
        uncertainty_bps = halfwidth / price * 1e4
        feed.conf_bps = uncertainty_bps if feed.source is _PYTH else 0.0
        ref = self.config.confidence_ref_bps
        feed.weight = (feed.base_weight * ref / uncertainty_bps if uncertainty_bps > ref
                       else feed.base_weight)
        feed.stale_at = published_ms + feed.stale_after_ms
        feed.asset.has_data = True

    def _apply_sequencer(self, feed: _Feed, fields: ChainlinkFields, received: int, now: int,
                         prices: list[ConsensusPrice]) -> None:
        chain = feed.chain
        before = self._health_key(chain, now)
        self._health_cache = None
        self._store(feed, fields.round_id, fields.answer, 0, 0, fields.updated_at * 1000,
                    fields.started_at * 1000, received)
        if self._health_key(chain, now) != before:
            self._bump(f"health_changes.{chain.name}")
            prices.extend(self._evaluate(a, now) for a in self._asset_list if a.has_data)

    @staticmethod
    def _health_key(chain: _Chain, now: int) -> tuple[str | None, int]:
        exclusion = chain.exclusion(now)
        return exclusion, chain.grace_end() if exclusion == reasons.SEQUENCER_GRACE else 0

    def _restore(self, state: ConsensusState) -> None:
        self._clock = state.clock
        self._clock_claims = dict(state.clock_claims)
        self._counters = defaultdict(int, state.counters)
        for saved in state.feeds:
            source = OracleSource(saved.source)
            spec = self.feeds.lookup(saved.chain, source, saved.feed_id)
            if spec is None:
                continue  # feed removed from the configuration since the snapshot
            feed = self._states[(saved.chain, source, spec.feed_id)]
            self._store(feed, int(saved.round_id) if saved.round_id else None,
                        int(saved.mantissa), saved.exponent, saved.conf, saved.published_at,
                        saved.started_at, saved.received_at)
            feed.phase_from = int(saved.phase_from) if saved.phase_from else None
        for saved_asset in state.assets:
            asset = self._assets.get(saved_asset.asset)
            if asset is None:
                continue
            asset.sequence = saved_asset.sequence
            asset.last_price = saved_asset.last_price
            asset.review_at = NEVER if saved_asset.review_at < 0 else saved_asset.review_at
            asset.has_data = True
        self._next_review = min((a.review_at for a in self._asset_list), default=NEVER)

    # --- consensus ------------------------------------------------------------------------

    def _run_reviews(self, now: int) -> list[ConsensusPrice]:
        """Re-evaluate, in event-time order, every asset whose review time has come.

        ``_next_review`` is a lower bound of the assets' review times (kept cheaply by
        ``_evaluate``); this is where it is made exact again.
        """
        out: list[ConsensusPrice] = []
        while True:
            at = min(a.review_at for a in self._asset_list)
            if at > now:
                self._next_review = at
                return out
            for asset in [a for a in self._asset_list if a.review_at == at]:
                self._bump("reviews")
                out.append(self._evaluate(asset, at))

    def _health(self, now: int) -> _Health:
        """(unhealthy chains, exclusion reason per unhealthy chain, end of the earliest grace
        period or NEVER) at `now`; cached until a grace period ends or a sequencer reports."""
        cache = self._health_cache
        if cache is not None and cache[0] <= now < cache[1]:
            return cache[2]
        unhealthy: list[str] = []
        exclusions: dict[str, str] = {}
        grace_end = NEVER
        for chain in self._sequenced:
            exclusion = chain.exclusion(now)
            if exclusion is not None:
                unhealthy.append(chain.name)
                exclusions[chain.name] = exclusion
                if exclusion == reasons.SEQUENCER_GRACE:
                    grace_end = min(grace_end, chain.grace_end())
        health = (tuple(unhealthy), exclusions, grace_end)
        self._health_cache = (now, grace_end, health)
        return health

    def _evaluate(self, asset: _Asset, now: int) -> ConsensusPrice:
        """The consensus of one asset at event time `now`; sets its next review time."""
        cache = self._health_cache
        if cache is not None and cache[0] <= now < cache[1]:
            unhealthy, chain_exclusion, review = cache[2]
        else:
            unhealthy, chain_exclusion, review = self._health(now)
        excluded: list[ExcludedSource] = []
        candidates: list[_Feed] = []
        used_mask = 0
        tightest = float("inf")
        max_conf_bps = self.config.max_confidence_bps
        for feed in asset.feeds:
            if feed.published_ms == NO_DATA_MS:
                excluded.append(feed.exclusions[reasons.NO_DATA])
            elif chain_exclusion and feed.chain.name in chain_exclusion:
                excluded.append(feed.exclusions[chain_exclusion[feed.chain.name]])
            elif now > feed.stale_at:
                excluded.append(feed.exclusions[reasons.STALE])
            elif feed.conf_bps > max_conf_bps:
                excluded.append(feed.exclusions[reasons.WIDE_CONFIDENCE])
            else:
                candidates.append(feed)
                used_mask |= feed.bit
                if feed.halfwidth < tightest:
                    tightest = feed.halfwidth
                if feed.stale_at < review - 1:
                    review = feed.stale_at + 1
        if candidates:
            price, confidence, dispersion, status, used_mask = self._aggregate(
                candidates, excluded, used_mask, tightest)
            asset.last_price = price
        else:
            price, confidence, dispersion, status = asset.last_price, 0.0, 0.0, _HALTED
        labels = asset.labels.get(used_mask)
        if labels is None:
            labels = asset.labels[used_mask] = [f.label for f in asset.feeds if f.bit & used_mask]
        asset.review_at = review
        if review < self._next_review:
            self._next_review = review
        asset.sequence += 1
        counters = self._counters
        counters["prices"] += 1
        counters[_STATUS_KEY[status]] += 1
        for item in excluded:
            counters[_EXCLUDED_KEY[item.reason]] += 1
        return ConsensusPrice(asset.name, now, price, confidence, status, dispersion,
                              list(labels), excluded, list(unhealthy), asset.sequence)

    def _aggregate(self, candidates: list[_Feed], excluded: list[ExcludedSource], used_mask: int,
                   tightest: float) -> tuple[float, float, float, PriceStatus, int]:
        """(price, confidence, dispersion_bps, status, used mask) of at least one candidate.

        `tightest` is the smallest half-width among the candidates. Outliers found here are
        appended to `excluded` (kept sorted by source label).
        """
        cfg = self.config
        if len(candidates) > 1:
            candidates.sort(key=_PRICE_ORDER)
        median = _weighted_median(candidates)
        low, high = candidates[0].price, candidates[-1].price
        tolerance = self._outlier_frac * median
        disagreement = False
        if median - low > tolerance or high - median > tolerance:
            inliers = [f for f in candidates if abs(f.price - median) - f.halfwidth <= tolerance]
            if len(inliers) < len(candidates):
                if sum(f.weight for f in inliers) * 2 > sum(f.weight for f in candidates):
                    for feed in candidates:
                        if feed not in inliers:
                            excluded.append(feed.exclusions[reasons.OUTLIER])
                            used_mask &= ~feed.bit
                    excluded.sort(key=_SOURCE_ORDER)
                    candidates = inliers
                    median = _weighted_median(candidates)
                    low, high = candidates[0].price, candidates[-1].price
                    tightest = min(f.halfwidth for f in candidates)
                else:
                    disagreement = True
        dispersion = (high - low) / median * 1e4
        confidence = max(median - low, high - median, tightest)
        count = len(candidates)
        if disagreement or count < cfg.min_sources or dispersion > cfg.halted_dispersion_bps:
            status = _HALTED
        elif count < cfg.ok_sources or dispersion > cfg.degraded_dispersion_bps:
            status = _DEGRADED
        else:
            status = _OK
        return median, confidence, dispersion, status, used_mask

