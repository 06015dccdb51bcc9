"""The oracle feed registry: which (chain, source, feed id) prices which asset, and how.

Read from a TOML file (``infra/feeds.toml`` by default, see docs/oracle.md) with three kinds
of tables: ``[consensus]`` (thresholds of the consensus step), ``[chains.<name>]`` (clock
tolerance and optional L2 sequencer-uptime feed) and ``[[feeds]]`` (one per price feed).
Adding a chain or a feed is an edit of that file, never of code. Unknown keys are refused,
so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from streams.domain import OracleSource
from streams.errors import ConfigError
from streams.oracle.normalize import PYTH_EXPO_MAX, PYTH_EXPO_MIN

MAX_DECIMALS = 36


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    """Thresholds of the consensus step (the ``[consensus]`` table).

    Staleness: a source counts while ``age <= heartbeat * (1 + staleness_slack_ratio) +
    staleness_slack_s + chain max_clock_skew_s`` (or the feed's own ``max_age_s``).
    Status: HALTED below ``min_sources`` used sources, when the sources disagree with no
    weighted majority, or when their dispersion exceeds ``halted_dispersion_bps``; DEGRADED
    below ``ok_sources`` or beyond ``degraded_dispersion_bps``; OK otherwise.
    Clock: an observation received more than ``max_clock_advance_s`` after the engine's clock
    is refused (``clock_jump``) unless feeds of at least ``clock_jump_chains`` chains report
    such a time (within that bound of each other): one source with a wrong clock cannot
    move event time, a real gap in every feed can. 0 (the default) means twice the longest
    staleness limit of any feed, so a quiet hour of a 3,600 s heartbeat is no jump.
    """

    min_sources: int = 2
    ok_sources: int = 3
    outlier_bps: float = 100.0
    degraded_dispersion_bps: float = 75.0
    halted_dispersion_bps: float = 250.0
    max_confidence_bps: float = 200.0
    confidence_ref_bps: float = 50.0
    staleness_slack_ratio: float = 0.10
    staleness_slack_s: float = 5.0
    max_clock_advance_s: float = 0.0
    clock_jump_chains: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.min_sources <= self.ok_sources:
            raise ConfigError("consensus: need 1 <= min_sources <= ok_sources")
        if not 0 <= self.degraded_dispersion_bps <= self.halted_dispersion_bps:
            raise ConfigError("consensus: need 0 <= degraded_dispersion_bps <= "
                              "halted_dispersion_bps")
        for name in ("outlier_bps", "max_confidence_bps", "confidence_ref_bps"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"consensus: {name} must be > 0")
        if self.staleness_slack_ratio < 0 or self.staleness_slack_s < 0:
            raise ConfigError("consensus: staleness slack must be >= 0")
        if self.max_clock_advance_s < 0:
            raise ConfigError("consensus: max_clock_advance_s must be >= 0 (0: derived)")
        if self.clock_jump_chains < 1:
            raise ConfigError("consensus: clock_jump_chains must be >= 1")


@dataclass(frozen=True, slots=True)
class SequencerFeed:
    """A Chainlink L2 sequencer-uptime feed: answer 0 = up, 1 = down since startedAt."""

    chain: str
    feed_id: str
    grace_s: float


@dataclass(frozen=True, slots=True)
class ChainSpec:
    """One chain: how far its clock may run ahead of ours, and its sequencer feed if any."""

    name: str
    max_clock_skew_s: float
    sequencer: SequencerFeed | None = None


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """One price feed on one chain.

    ``exponent`` is how the feed scales its integers (``-decimals`` for Chainlink, ``expo``
    for Pyth); ``deviation_bps`` is the Chainlink deviation threshold (0 for Pyth), used as
    the feed's own uncertainty; ``label`` names the source in consensus outputs.
    """

    chain: str
    source: OracleSource
    feed_id: str
    asset: str
    exponent: int
    heartbeat_s: float
    weight: float
    deviation_bps: float
    label: str
    max_age_s: float | None = None


def normalize_feed_id(feed_id: str) -> str:
    """Canonical form of a feed id for matching: lower case, no ``0x`` prefix."""
    return feed_id.strip().lower().removeprefix("0x")


class FeedRegistry:
    """All configured feeds and chains, indexed for lookup by (chain, source, feed id)."""

    def __init__(self, chains: tuple[ChainSpec, ...], feeds: tuple[FeedSpec, ...],
                 consensus: ConsensusConfig | None = None) -> None:
        self.chains: dict[str, ChainSpec] = {c.name: c for c in chains}
        self.feeds: tuple[FeedSpec, ...] = tuple(sorted(feeds, key=_feed_order))
        self.consensus = consensus or ConsensusConfig()
        self._index: dict[tuple[str, OracleSource, str], FeedSpec | SequencerFeed] = {}
        for feed in self.feeds:
            self._add(feed.chain, feed.source, feed.feed_id, feed)
        for chain in self.chains.values():
            if chain.sequencer is not None:
                self._add(chain.name, OracleSource.CHAINLINK, chain.sequencer.feed_id,
                          chain.sequencer)
        labels = set()
        for feed in self.feeds:
            if feed.chain not in self.chains:
                raise ConfigError(f"feed {feed.asset} {feed.label}: chain {feed.chain!r} is "
                                  f"not declared in [chains]")
            if (feed.asset, feed.label) in labels:
                raise ConfigError(f"two feeds of {feed.asset} are labelled {feed.label!r}")
            labels.add((feed.asset, feed.label))

    def _add(self, chain: str, source: OracleSource, feed_id: str,
             target: FeedSpec | SequencerFeed) -> None:
        key = (chain, source, normalize_feed_id(feed_id))
        if key in self._index:
            raise ConfigError(f"feed {source.value.lower()} {feed_id} on {chain} is configured "
                              f"twice")
        self._index[key] = target

    def lookup(self, chain: str, source: OracleSource, feed_id: str
               ) -> FeedSpec | SequencerFeed | None:
        """The feed an observation belongs to, or None if it is not configured."""
        return self._index.get((chain, source, normalize_feed_id(feed_id)))

    @property
    def assets(self) -> tuple[str, ...]:
        """Every priced asset, sorted."""
        return tuple(sorted({f.asset for f in self.feeds}))

    def feeds_for(self, asset: str) -> tuple[FeedSpec, ...]:
        """The feeds of one asset, sorted by label."""
        return tuple(sorted((f for f in self.feeds if f.asset == asset), key=lambda f: f.label))

    @property
    def sequencers(self) -> tuple[SequencerFeed, ...]:
        """Every sequencer-uptime feed, by chain name."""
        return tuple(c.sequencer for _, c in sorted(self.chains.items()) if c.sequencer)


def _feed_order(feed: FeedSpec) -> tuple[str, str, str, str]:
    return (feed.asset, feed.label, feed.chain, feed.feed_id)


# --- reading the TOML file ----------------------------------------------------------------

_CHAIN_KEYS = {"max_clock_skew_s", "sequencer_feed", "sequencer_grace_s"}
_FEED_KEYS = {"chain", "source", "feed_id", "asset", "decimals", "expo", "heartbeat_s",
              "weight", "deviation_bps", "label", "max_age_s"}


def load_feeds(path: Path | str) -> FeedRegistry:
    """The feed registry described by a TOML file (format: docs/oracle.md)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read feeds file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"feeds file {path} is not valid TOML: {exc}") from exc
    return parse_feeds(data, origin=str(path))


def loads_feeds(text: str) -> FeedRegistry:
    """The feed registry described by TOML text (tests, tools)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"feeds text is not valid TOML: {exc}") from exc
    return parse_feeds(data, origin="<text>")


def parse_feeds(data: Mapping[str, Any], origin: str = "<feeds>") -> FeedRegistry:
    """The feed registry from already-parsed TOML tables."""
    _refuse_unknown(data, {"consensus", "chains", "feeds"}, origin)
    consensus = _parse_consensus(data.get("consensus", {}), origin)
    chains_raw = data.get("chains", {})
    if not isinstance(chains_raw, Mapping):
        raise ConfigError(f"{origin}: [chains] must be a table of tables")
    chains = tuple(_parse_chain(name, raw, origin) for name, raw in sorted(chains_raw.items()))
    feeds_raw = data.get("feeds", [])
    if not isinstance(feeds_raw, list) or not feeds_raw:
        raise ConfigError(f"{origin}: at least one [[feeds]] entry is required")
    feeds = tuple(_parse_feed(i, raw, origin) for i, raw in enumerate(feeds_raw))
    return FeedRegistry(chains, feeds, consensus)


def _refuse_unknown(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(known))}")


def _parse_consensus(raw: Any, origin: str) -> ConsensusConfig:
    where = f"{origin} [consensus]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    types = {f.name: f.type for f in fields(ConsensusConfig)}
    _refuse_unknown(raw, set(types), where)
    values = {}
    for key, value in raw.items():
        wanted = int if types[key] in ("int", int) else float
        values[key] = _number(value, wanted, f"{where} {key}")
    return ConsensusConfig(**values)


def _parse_chain(name: str, raw: Any, origin: str) -> ChainSpec:
    where = f"{origin} [chains.{name}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    _refuse_unknown(raw, _CHAIN_KEYS, where)
    skew = _number(raw.get("max_clock_skew_s", 5.0), float, f"{where} max_clock_skew_s")
    if skew < 0:
        raise ConfigError(f"{where} max_clock_skew_s must be >= 0")
    sequencer = None
    if "sequencer_feed" in raw:
        grace = _number(raw.get("sequencer_grace_s", 3600.0), float, f"{where} sequencer_grace_s")
        if grace < 0:
            raise ConfigError(f"{where} sequencer_grace_s must be >= 0")
        sequencer = SequencerFeed(name, _text(raw["sequencer_feed"], f"{where} sequencer_feed"),
                                  grace)
    elif "sequencer_grace_s" in raw:
        raise ConfigError(f"{where}: sequencer_grace_s without sequencer_feed")
    return ChainSpec(name, skew, sequencer)


def _parse_feed(index: int, raw: Any, origin: str) -> FeedSpec:
    where = f"{origin} [[feeds]] #{index + 1}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    _refuse_unknown(raw, _FEED_KEYS, where)
    for key in ("chain", "source", "feed_id", "asset", "heartbeat_s"):
        if key not in raw:
            raise ConfigError(f"{where}: missing {key}")
    source_name = _text(raw["source"], f"{where} source").upper()
    try:
        source = OracleSource(source_name)
    except ValueError:
        raise ConfigError(f"{where}: source must be chainlink or pyth, got "
                          f"{raw['source']!r}") from None
    chain = _text(raw["chain"], f"{where} chain")
    exponent = _feed_exponent(raw, source, where)
    heartbeat = _number(raw["heartbeat_s"], float, f"{where} heartbeat_s")
    weight = _number(raw.get("weight", 1.0), float, f"{where} weight")
    deviation = _number(raw.get("deviation_bps", 0.0), float, f"{where} deviation_bps")
    max_age = raw.get("max_age_s")
    if max_age is not None:
        max_age = _number(max_age, float, f"{where} max_age_s")
        if max_age <= 0:
            raise ConfigError(f"{where}: max_age_s must be > 0")
    if heartbeat <= 0 or weight <= 0 or deviation < 0:
        raise ConfigError(f"{where}: need heartbeat_s > 0, weight > 0, deviation_bps >= 0")
    label = raw.get("label", f"{source.value.lower()}@{chain}")
    return FeedSpec(chain=chain, source=source, feed_id=_text(raw["feed_id"], f"{where} feed_id"),
                    asset=_text(raw["asset"], f"{where} asset"), exponent=exponent,
                    heartbeat_s=heartbeat, weight=weight, deviation_bps=deviation,
                    label=_text(label, f"{where} label"), max_age_s=max_age)


def _feed_exponent(raw: Mapping[str, Any], source: OracleSource, where: str) -> int:
    if source is OracleSource.CHAINLINK:
        if "expo" in raw or "decimals" not in raw:
            raise ConfigError(f"{where}: a chainlink feed has decimals (not expo)")
        decimals = _number(raw["decimals"], int, f"{where} decimals")
        if not 0 <= decimals <= MAX_DECIMALS:
            raise ConfigError(f"{where}: decimals must be in 0..{MAX_DECIMALS}")
        return -decimals
    if "decimals" in raw or "expo" not in raw:
        raise ConfigError(f"{where}: a pyth feed has expo (not decimals)")
    expo = _number(raw["expo"], int, f"{where} expo")
    low, high = PYTH_EXPO_MIN, PYTH_EXPO_MAX
    if not low <= expo <= high:
        raise ConfigError(f"{where}: expo must be in {low}..{high}")
    return expo


def _number(value: Any, wanted: type, where: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if wanted is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{where} must be finite")
    return float(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string")
    return value.strip()
