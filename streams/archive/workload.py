"""A realistic mix of archived messages, for the benchmark and the archive's tests.

Proportions are those of a bundled run (`aps run --duration 60`, 400 accounts: 14,916
messages): risk inputs 33 %, account states (the risk table's changelog) 30 %, account
events 11 %, execution reports and commands 10 % each, consensus prices and oracle ticks
3 % each, and a few dead letters; refusals (risk.refusals, newer than that run) 1 %.
Record shapes follow that run's too: account states with one to four positions (options
among them, with small gammas), rules, pending commands, valuations (a few never valued,
min margin ratio 1e308), risk inputs carrying prices, account events and reports. A small
share of messages the archiver must keep raw (garbage, a wrong schema) and changelog
tombstones are mixed in.

Everything is derived from a seeded `random.Random`: the same arguments give the same bytes.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from streams.archive.rows import KafkaMessage
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
    LadderAction,
    MarginLadder,
    MarginStep,
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
    VolScalingRule,
)

T0 = 1_768_478_400_000  # event time of the first message, epoch ms
CHANGELOG = "aps-risk-accounts-changelog"
CHAINS = ("ethereum", "arbitrum", "solana")
ASSETS = {"BTC": 57_500.0, "ETH": 2_700.0, "SOL": 118.0}
SOURCES = ["chainlink@arbitrum", "chainlink@ethereum", "pyth@arbitrum", "pyth@solana"]
# one engine configuration per run: every command carries the same settings digest
CONFIG_HASH = "16695f0ef9271e56fad8b12d819109d0"

# (topic kind, weight): the measured proportions (per 10,000 messages); refusals
# (risk.refusals) came after that run, their weight is a guess of one per ten commands
MIX = (("risk_input", 3324), ("account_state", 2970), ("account_event", 1107),
       ("report", 989), ("command", 989), ("price", 307), ("tick", 310), ("dead_letter", 3),
       ("tombstone", 1), ("refusal", 99))
ODD_SHARE = 0.0005  # messages that are not valid APS records of their topic
# of those: garbage (bad framing), another topic's record, a truncated record. The bundled
# run had 2 garbage messages in 14,916 and no truncated one; truncation is kept (1 in 10
# odd messages) so that the archiver's recovery from a malformed record is measured too
ODD_KINDS = (("garbage", 6), ("wrong_schema", 3), ("truncated", 1))


class Workload:
    """Generates the mix; `messages(n)` returns n messages with increasing offsets."""

    def __init__(self, seed: int = 7, accounts: int = 400, partitions: int = 4) -> None:
        self.rng = random.Random(seed)
        self.accounts = [f"acct-{i:06d}" for i in range(accounts)]
        self.partitions = partitions
        self.offsets: dict[tuple[str, int], int] = {}
        self.clock = T0
        self.versions: dict[str, int] = {}
        kinds, weights = zip(*MIX, strict=True)
        self._kinds, self._weights = list(kinds), list(weights)
        self._build: dict[str, Callable[[], tuple[str, bytes, bytes | None]]] = {
            "risk_input": self._risk_input, "account_state": self._account_state,
            "account_event": self._account_event, "report": self._report,
            "command": self._command, "price": self._price, "tick": self._tick,
            "dead_letter": self._dead_letter, "tombstone": self._tombstone,
            "refusal": self._refusal,
        }

    def messages(self, count: int) -> list[KafkaMessage]:
        """`count` messages of the mix."""
        kinds = self.rng.choices(self._kinds, self._weights, k=count)
        return [self._message(kind) for kind in kinds]

    def _message(self, kind: str) -> KafkaMessage:
        self.clock += self.rng.randint(0, 9)
        topic, key, value = self._build[kind]()
        if value is not None and self.rng.random() < ODD_SHARE:
            value = self._odd(value)
        partition = self.rng.randrange(self.partitions)
        offset = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = offset + 1
        return KafkaMessage(topic, partition, offset, key, value, self.clock + 3)

    def _odd(self, value: bytes) -> bytes:
        """A value the archiver keeps raw: garbage, another topic's record, or truncated."""
        kinds, weights = zip(*ODD_KINDS, strict=True)
        kind = self.rng.choices(kinds, weights)[0]
        if kind == "truncated":
            return value[: self.rng.randrange(11, len(value))]
        if kind == "garbage":
            return b"not an avro message"
        return encode(self._consensus(self.rng.choice(list(ASSETS))))

    # --- records -------------------------------------------------------------------------

    def _account(self) -> str:
        return self.rng.choice(self.accounts)

    def _x(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high)

    def _consensus(self, asset: str) -> ConsensusPrice:
        rng = self.rng
        excluded = [ExcludedSource(rng.choice(SOURCES), "stale")] if rng.random() < 0.2 else []
        status = rng.choices(list(PriceStatus), [90, 7, 3])[0]
        return ConsensusPrice(asset, self.clock, ASSETS[asset] * self._x(0.9, 1.1),
                              self._x(0.1, 800.0), status, self._x(0.0, 50.0),
                              [s for s in SOURCES if not excluded or s != excluded[0].source],
                              excluded, [], rng.randrange(10_000))

    def _instrument(self, asset: str, chain: str, option: bool) -> Instrument:
        if not option:
            return Instrument(f"{asset}-PERP", InstrumentKind.PERP, asset, chain)
        strike = round(ASSETS[asset] * self._x(0.7, 1.4), -1)
        kind = self.rng.choice(list(OptionType))
        return Instrument(f"{asset}-30D-{strike:.0f}-{kind.value[0]}", InstrumentKind.OPTION,
                          asset, chain, kind, strike, T0 + 30 * 86_400_000,
                          PricingModel.BLACK76)

    def _position(self, account: str, n: int, asset: str, chain: str) -> Position:
        option = n > 0
        instrument = self._instrument(asset, chain, option)
        price = ASSETS[asset] * (self._x(0.01, 0.08) if option else self._x(0.95, 1.05))
        return Position(f"{account}-{'opt' if option else 'perp'}{n}", instrument,
                        self._x(-5.0, 5.0), price, self._x(0.5, 0.9) if option else None)

    def _rules(self) -> ScalingRules:
        rng = self.rng
        steps = [MarginStep(1.5, LadderAction.TOP_UP, 0.5),
                 MarginStep(1.2, LadderAction.REDUCE, 0.25),
                 MarginStep(1.05, LadderAction.REDUCE, 0.5)]
        band = self._x(0.05, 2.0)
        return ScalingRules(
            delta_band=DeltaBandRule(band=band, hard_limit=band * 3),
            vol_scaling=VolScalingRule(self._x(0.4, 0.9), self._x(1e-5, 7e-5))
            if rng.random() < 0.6 else None,
            margin_ladder=MarginLadder(steps, 1.8) if rng.random() < 0.8 else None,
            limits=CommandLimits(cooldown_ms=rng.choice([30_000, 60_000]),
                                 slippage_bps=rng.choice([30.0, 50.0])))

    def _account_state(self) -> tuple[str, bytes, bytes | None]:
        rng = self.rng
        account = self._account()
        version = self.versions[account] = self.versions.get(account, 0) + 1
        asset, chain = rng.choice(list(ASSETS)), rng.choice(CHAINS)
        positions = [self._position(account, n, asset, chain) for n in range(rng.randint(1, 4))]
        collateral = [Collateral(chain, self._x(1_000.0, 90_000.0), rng.choice([0.0, 5_000.0]))]
        if rng.random() < 0.15:
            collateral.append(Collateral(rng.choice(CHAINS), self._x(-50.0, 5_000.0), 0.0))
        pending = [PendingCommand(f"{rng.getrandbits(64):016x}", rng.choice(list(CommandReason)),
                                  f"{asset}-PERP", self._x(-3.0, 3.0), 0.0, self.clock,
                                  self.clock + 120_000, "delta_band:" + asset)
                   for _ in range(rng.choice([0, 0, 0, 1, 1, 2, 3]))]
        valued = rng.random() < 0.88
        valuation = Valuation(
            self.clock, self._x(-5_000.0, 90_000.0), self._x(1_000.0, 20_000.0),
            self._x(500.0, 10_000.0), self._x(-20.0, 8.0), self._x(0.0, 9_000.0),
            [Exposure(asset, ASSETS[asset], self._x(-3.0, 3.0), self._x(-6e-5, 6e-5),
                      self._x(-50.0, 50.0), self._x(-30.0, 0.0))]) if valued else None
        ratio = valuation.margin_ratio if valuation else 1e308
        state = AccountState(
            account_id=account, version=version, last_event_time=self.clock,
            positions=positions, collateral=collateral, rules=self._rules(),
            rules_hash=f"{rng.getrandbits(128):032x}", pending=pending,
            last_fired={f"delta_band:{asset}": self.clock - rng.randrange(60_000)},
            recent_commands=[self.clock - rng.randrange(60_000) for _ in range(len(pending))],
            valuation=valuation, min_margin_ratio=min(ratio, self._x(0.5, 9.0)) if valued
            else 1e308, breached_maintenance=ratio < 1.0,
            origin_offsets={f"risk.inputs:{p}": rng.randrange(5_000) for p in range(
                rng.randint(1, 4))},
            base_quantities={p.position_id: p.quantity for p in positions[1:]})
        return CHANGELOG, account.encode(), encode(state)

    def _tombstone(self) -> tuple[str, bytes, bytes | None]:
        return CHANGELOG, self._account().encode(), None

    def _account_event_record(self, account: str) -> AccountEvent:
        rng = self.rng
        kind = rng.choices(["position", "collateral", "rules"], [51, 25, 25])[0]
        body: PositionChanged | CollateralChanged | RulesChanged
        if kind == "position":
            asset = rng.choice(list(ASSETS))
            body = PositionChanged(self._position(account, rng.randrange(3), asset,
                                                  rng.choice(CHAINS)))
        elif kind == "collateral":
            body = CollateralChanged(rng.choice(CHAINS), self._x(100.0, 50_000.0), 0.0)
        else:
            body = RulesChanged(self._rules())
        return AccountEvent(f"book-{account}-{rng.randrange(100)}", account, self.clock, body)

    def _account_event(self) -> tuple[str, bytes, bytes | None]:
        account = self._account()
        return "account.events", account.encode(), encode(self._account_event_record(account))

    def _report_record(self, account: str) -> ExecutionReport:
        rng = self.rng
        asset, chain = rng.choice(list(ASSETS)), rng.choice(CHAINS)
        status = rng.choices(list(ExecutionStatus), [96, 3, 1])[0]
        return ExecutionReport(
            f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(128):032x}", account, chain,
            status, "" if status is ExecutionStatus.FILLED else "deadline", CommandAction.TRADE,
            self._instrument(asset, chain, False), self._x(-100.0, 100.0),
            ASSETS[asset] * self._x(0.95, 1.05), self._x(0.0, 10.0), 0.0, self.clock,
            f"sim-{chain}")

    def _report(self) -> tuple[str, bytes, bytes | None]:
        account = self._account()
        return "execution.reports", account.encode(), encode(self._report_record(account))

    def _risk_input(self) -> tuple[str, bytes, bytes | None]:
        rng = self.rng
        account = self._account()
        kind = rng.choices(["price", "event", "report"], [37, 33, 30])[0]
        body: ConsensusPrice | AccountEvent | ExecutionReport
        if kind == "price":
            body, origin = self._consensus(rng.choice(list(ASSETS))), "oracle.prices"
        elif kind == "event":
            body, origin = self._account_event_record(account), "account.events"
        else:
            body, origin = self._report_record(account), "execution.reports"
        return "risk.inputs", account.encode(), encode(RiskInput(origin, rng.randrange(4),
                                                                 rng.randrange(5_000), body))

    def _command(self) -> tuple[str, bytes, bytes | None]:
        rng = self.rng
        account, asset, chain = self._account(), rng.choice(list(ASSETS)), rng.choice(CHAINS)
        price = ASSETS[asset] * self._x(0.95, 1.05)
        top_up = rng.random() < 0.3
        quantity = 0.0 if top_up else self._x(0.01, 50.0)
        command = ScalingCommand(
            command_id=f"{rng.getrandbits(128):032x}", account_id=account, chain=chain,
            reason=CommandReason.MARGIN_TOP_UP if top_up else rng.choice(list(CommandReason)),
            rule="margin_ladder[0]" if top_up else f"delta_band:{asset}",
            trigger={"margin_ratio": self._x(1.0, 1.5)} if top_up else {
                "delta": self._x(-3.0, 3.0), "target": 0.0, "band": self._x(0.05, 1.0),
                "hysteresis": 0.2, "reference_price": price},
            action=CommandAction.TOP_UP if top_up else CommandAction.TRADE,
            instrument=None if top_up else self._instrument(asset, chain, False),
            side=None if top_up else rng.choice(list(Side)), quantity=quantity,
            amount=self._x(1_000.0, 30_000.0) if top_up else 0.0,
            limit_price=0.0 if top_up else price * 1.005, slippage_bps=50.0,
            reduce_only=rng.random() < 0.5, created_at=self.clock,
            deadline=self.clock + 120_000,
            provenance=Provenance(asset, price, self._x(1.0, 200.0), self.clock,
                                  PriceStatus.OK, SOURCES, rng.randrange(50),
                                  f"{rng.getrandbits(128):032x}", CONFIG_HASH),
            signature=f"{rng.getrandbits(256):064x}")
        return f"exec.{chain}.commands", account.encode(), encode(command)

    def _price(self) -> tuple[str, bytes, bytes | None]:
        asset = self.rng.choice(list(ASSETS))
        return "oracle.prices", asset.encode(), encode(self._consensus(asset))

    def _tick(self) -> tuple[str, bytes, bytes | None]:
        rng = self.rng
        asset = rng.choice(list(ASSETS))
        if rng.random() < 0.6:
            chain = rng.choice(["ethereum", "arbitrum"])
            round_id = str(rng.getrandbits(67))
            body: ChainlinkRound | PythPriceUpdate = ChainlinkRound(
                round_id, str(int(ASSETS[asset] * 1e8)), self.clock // 1000,
                self.clock // 1000, round_id)
            source = OracleSource.CHAINLINK
        else:
            chain = "solana"
            body = PythPriceUpdate(int(ASSETS[asset] * 1e8), rng.randrange(10**8), -8,
                                   self.clock // 1000, int(ASSETS[asset] * 1e8),
                                   rng.randrange(10**8))
            source = OracleSource.PYTH
        observation = OracleObservation(chain, source, f"{asset.lower()}-usd", self.clock, body)
        return "oracle.ticks", f"{chain}/{asset}".encode(), encode(observation)

    def _dead_letter(self) -> tuple[str, bytes, bytes | None]:
        rng = self.rng
        letter = DeadLetter("risk", "invalid_position", "quantity must be finite, got nan",
                            "risk.inputs", rng.randrange(4), rng.randrange(5_000),
                            b"broken-account", b"\xc3\x01" + rng.randbytes(40),
                            rng.choice([-1, self.clock]))
        return "aps.deadletter", b"risk", encode(letter)

    def _refusal(self) -> tuple[str, bytes, bytes | None]:
        rng = self.rng
        account, asset = self._account(), rng.choice(list(ASSETS))
        limit = self._x(10_000.0, 100_000.0)
        notional = limit * self._x(1.0, 4.0)
        reason, rule, values = rng.choice([
            ("cooldown", f"delta_band:{asset}",
             {"fired_at": float(self.clock - rng.randrange(60_000)), "cooldown_ms": 60_000.0}),
            ("max_notional", "margin_ladder[1]",
             {"notional": notional, "max_command_notional": limit, "commands": 3.0}),
            ("rate_limited", f"vol_scaling:{asset}",
             {"max_commands": 10.0, "rate_window_ms": 60_000.0, "recent_commands": 10.0}),
            ("degraded", f"gamma_bound:{asset}", {}),
        ])
        refused = ActionRefused(account, rule, reason, f"{reason} on {asset}", values,
                                self.clock, rng.randrange(self.partitions),
                                rng.randrange(100_000))
        return "risk.refusals", account.encode(), encode(refused)


def messages(count: int, seed: int = 7) -> list[KafkaMessage]:
    """`count` messages of the realistic mix (see the module docstring)."""
    return Workload(seed).messages(count)
