"""The standard workload of `aps bench pipeline` (bench/README.md, "Standard workload").

- Market: 10 assets (BTC, ETH, SOL, AVAX, LINK, ARB, OP, DOGE, BNB, XRP) with seeded
  noise at their own volatility (55-110% annualized) and a sell-off from the first second:
  each asset falls 2.5-5% over five minutes of event time, then recovers a third of it.
- Oracles: the 40 price feeds of bench/feeds-10-assets.toml (Chainlink on Ethereum and
  Arbitrum, Pyth on Solana and Arbitrum, per asset) plus Arbitrum's sequencer-uptime feed,
  each publishing in its own shape (streams.oracle.synthetic) with 0.5 bps of noise:
  about 21 observations per second of event time in all, 13,036 over the 600 s stream.
- Book: `accounts` accounts from the project's book generator (streams.risk.bookgen) with
  1 to 5 positions each (options and perps, on one asset each, spread over the 10 assets
  and 3 chains), every account with scaling rules: a margin ladder on all of them, delta
  bands and volatility scaling on the option sellers.

Everything is deterministic for a seed, and every variant of the benchmark is fed exactly
the bytes built here (Avro single-object encoding, keyed like the real producers).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from streams.codecs import encode
from streams.domain import AccountEvent, OracleObservation
from streams.oracle.feeds import FeedRegistry, load_feeds
from streams.oracle.synthetic import observations_from_paths
from streams.paths import PROJECT_ROOT
from streams.risk.bookgen import BookAccount, account_events, generate_accounts
from streams.scenario.paths import AssetPathSpec, crash_paths

FEEDS_FILE = PROJECT_ROOT / "bench" / "feeds-10-assets.toml"
CHAINS = ("ethereum", "arbitrum", "solana")
START_MS = 1_768_478_400_000  # 2026-01-15T12:00:00Z
ASSETS = (
    AssetPathSpec("BTC", 64_000.0, 0.55, crash_drop=0.025),
    AssetPathSpec("ETH", 3_200.0, 0.70, crash_drop=0.035),
    AssetPathSpec("SOL", 150.0, 0.95, crash_drop=0.045),
    AssetPathSpec("AVAX", 35.0, 0.95, crash_drop=0.045),
    AssetPathSpec("LINK", 15.0, 0.90, crash_drop=0.04),
    AssetPathSpec("ARB", 0.80, 1.00, crash_drop=0.05),
    AssetPathSpec("OP", 1.80, 1.00, crash_drop=0.05),
    AssetPathSpec("DOGE", 0.15, 1.10, crash_drop=0.05),
    AssetPathSpec("BNB", 580.0, 0.60, crash_drop=0.03),
    AssetPathSpec("XRP", 0.55, 0.90, crash_drop=0.04),
)
# per-observation noise of each feed around the true price: small enough that realized
# volatility measured on the consensus prices stays near the paths' own (the default 2 bps
# at about one update per second per feed reads as 150% annualized volatility, which makes
# every option seller's volatility scaling fire on noise)
NOISE_BPS = 0.5
# share of accounts holding 1, 2, 3, 4 and 5 positions
POSITION_MIX = (0.25, 0.25, 0.20, 0.15, 0.15)
# a sell-off, not a crash: the drop above, spread over five minutes from the first second
CRASH_START_S = 1
CRASH_LEN_S = 300

Payload = tuple[bytes, bytes]  # (key, value)


@dataclass(frozen=True)
class WorkloadSpec:
    """Size and seed of a workload."""

    accounts: int = 100_000
    duration_s: int = 600
    seed: int = 7


@dataclass(frozen=True)
class Workload:
    """A generated workload, decoded and encoded."""

    spec: WorkloadSpec
    feeds: FeedRegistry
    book: list[BookAccount]
    account_events: list[AccountEvent]
    observations: list[OracleObservation]
    account_payloads: list[Payload]
    tick_payloads: list[Payload]

    @property
    def event_rate(self) -> float:
        """Observations per second of event time."""
        if len(self.observations) < 2:
            return 0.0
        span = self.observations[-1].received_at - self.observations[0].received_at
        return 1000.0 * (len(self.observations) - 1) / max(span, 1)

    def describe(self) -> str:
        """One paragraph on what the workload holds."""
        positions = Counter(len(a.positions) for a in self.book)
        options = sum(p.instrument.is_option for a in self.book for p in a.positions)
        total = sum(len(a.positions) for a in self.book)
        kinds = Counter(a.kind for a in self.book)
        kind_text = ", ".join(f"{k} {n:,}" for k, n in sorted(kinds.items()))
        mix_text = ", ".join(f"{k}: {positions[k]:,}" for k in sorted(positions))
        return (f"{len(self.book):,} accounts ({kind_text}), {total:,} positions "
                f"({options:,} options; accounts by position count {mix_text}) on "
                f"{len(self.feeds.assets)} assets and {len(CHAINS)} chains; "
                f"{len(self.account_events):,} account events; "
                f"{len(self.observations):,} oracle observations from "
                f"{len(self.feeds.feeds)} feeds over {self.spec.duration_s} s of event time "
                f"({self.event_rate:.1f} observations/s)")


def start_prices() -> dict[str, float]:
    """First price of every asset."""
    return {spec.asset: spec.start_price for spec in ASSETS}


def build_book(accounts: int, seed: int) -> list[BookAccount]:
    """`accounts` generated accounts with 1-5 positions (POSITION_MIX), ids acct-NNNNNN."""
    counts = [int(accounts * share) for share in POSITION_MIX]
    counts[0] += accounts - sum(counts)
    book: list[BookAccount] = []
    for positions, count in enumerate(counts, start=1):
        if count <= 0:
            continue
        part = generate_accounts(start_prices(), count, seed + positions, CHAINS, START_MS,
                                 positions_per_account=positions)
        offset = len(book)
        book.extend([_renumbered(account, offset + k) for k, account in enumerate(part)])
    return book


def _renumbered(account: BookAccount, number: int) -> BookAccount:
    new_id = f"acct-{number:06d}"
    positions = [replace(p, position_id=p.position_id.replace(account.account_id, new_id, 1))
                 for p in account.positions]
    return replace(account, account_id=new_id, positions=positions)


def build_observations(feeds: FeedRegistry, duration_s: int, seed: int
                       ) -> list[OracleObservation]:
    """Every feed's observations of the standard market, in arrival order."""
    paths = crash_paths(START_MS, duration_s, seed=seed, crash_start_s=CRASH_START_S,
                        crash_len_s=CRASH_LEN_S, assets=ASSETS)
    return observations_from_paths(paths, feeds, seed, noise_bps=NOISE_BPS)


def tick_key(observation: OracleObservation) -> bytes:
    """Key of an observation on oracle.ticks (as the scenario producer writes it)."""
    return f"{observation.chain}/{observation.feed_id}".encode()


def build_workload(spec: WorkloadSpec, progress: Callable[[str], None] | None = None
                   ) -> Workload:
    """The workload of `spec` (book, observations and their encoded payloads)."""
    say = progress or (lambda _text: None)
    feeds = load_feeds(FEEDS_FILE)
    say(f"generating the book: {spec.accounts:,} accounts")
    book = build_book(spec.accounts, spec.seed)
    events = account_events(book, START_MS)
    say(f"encoding {len(events):,} account events")
    account_payloads = [(e.account_id.encode(), encode(e)) for e in events]
    say(f"generating {spec.duration_s} s of oracle observations")
    observations = build_observations(feeds, spec.duration_s, spec.seed)
    ticks = [(tick_key(o), encode(o)) for o in observations]
    return Workload(spec, feeds, book, events, observations, account_payloads, ticks)


def prefix(observations: Sequence[OracleObservation], count: int) -> list[OracleObservation]:
    """The first `count` observations (all of them if count <= 0)."""
    return list(observations) if count <= 0 else list(observations[:count])
