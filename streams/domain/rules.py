"""Per-account scaling rules (Avro record aps.ScalingRules) and the bounds of their fields.

Every numeric field has a documented range in `RULE_BOUNDS` (also in docs/risk.md, "Rule
bounds"); `validate_rules` refuses rules with any field outside it, so a RulesChanged
event carrying a 30-year deadline, a notional of 1e300 or a NaN is dead-lettered and the
account keeps the rules it had.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from streams.domain.enums import LadderAction
from streams.errors import InvalidRulesError


@dataclass(frozen=True, slots=True)
class DeltaBandRule:
    """Keep net delta per underlying within target +/- band; trade back to target."""

    band: float
    hard_limit: float
    target: float = 0.0
    hysteresis: float = 0.2
    hedge_chain: str | None = None


@dataclass(frozen=True, slots=True)
class VolScalingRule:
    """Scale option exposure toward a volatility target and bound gamma."""

    vol_target: float
    max_gamma: float
    window: int = 30
    min_scale: float = 0.1


@dataclass(frozen=True, slots=True)
class MarginStep:
    """One rung of the margin ladder."""

    margin_ratio: float
    action: LadderAction
    fraction: float


@dataclass(frozen=True, slots=True)
class MarginLadder:
    """Top up from the reserve first, then reduce, as the margin ratio falls."""

    steps: list[MarginStep]
    target_ratio: float
    confidence_k: float = 2.0


@dataclass(frozen=True, slots=True)
class CommandLimits:
    """Cooldowns, rate limits and size bounds, all in event time."""

    cooldown_ms: int = 60_000
    max_commands: int = 10
    rate_window_ms: int = 600_000
    min_trade_notional: float = 100.0
    max_command_notional: float = 1_000_000.0
    slippage_bps: float = 30.0
    deadline_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class ScalingRules:
    """All rules of one account; replaced as a whole by a RulesChanged event."""

    delta_band: DeltaBandRule | None = None
    vol_scaling: VolScalingRule | None = None
    margin_ladder: MarginLadder | None = None
    limits: CommandLimits = field(default_factory=CommandLimits)


# --- bounds -----------------------------------------------------------------------------------

# quantities (units of the underlying) and notionals beyond this are data errors, not books
MAX_QUANTITY = 1e12
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Bound:
    """The range a rule field must lie in: [low, high], or (low, high] when `low_open`.

    kind: "number" (int or float, finite), "integer" (int) or "length" (the length of a
    string or list lies in the range).
    """

    low: float
    high: float
    kind: Literal["number", "integer", "length"] = "number"
    low_open: bool = False
    unit: str = ""

    def admits(self, value: float) -> bool:
        """True when `value` lies in the range (NaN never does)."""
        above = value > self.low if self.low_open else value >= self.low
        return bool(above and value <= self.high)

    def describe(self) -> str:
        """The range for humans: ``a number in (0, 1]``, ``an integer in [0, 86400000] ms``,
        ``of length in [1, 16] steps``."""
        kind = {"number": "a number in", "integer": "an integer in",
                "length": "of length in"}[self.kind]
        left = "(" if self.low_open else "["
        unit = f" {self.unit}" if self.unit else ""
        return f"{kind} {left}{self._text(self.low)}, {self._text(self.high)}]{unit}"

    def _text(self, x: float) -> str:
        return str(int(x)) if self.kind != "number" else f"{x:g}"


# Every bounded field of ScalingRules, by path (list items drop their index); a new rule
# field needs its entry here (a unit test checks that every field has one). The bundled
# scenario, the book generators (streams/risk/bookgen.py) and the defaults lie well inside.
RULE_BOUNDS: dict[str, Bound] = {
    "delta_band.band": Bound(1e-12, MAX_QUANTITY, unit="units"),
    "delta_band.hard_limit": Bound(1e-12, MAX_QUANTITY, unit="units (and >= band)"),
    "delta_band.target": Bound(-MAX_QUANTITY, MAX_QUANTITY, unit="units"),
    "delta_band.hysteresis": Bound(0.0, 10.0, unit="x band"),
    "delta_band.hedge_chain": Bound(1, 64, kind="length", unit="characters (or null)"),
    "vol_scaling.vol_target": Bound(0.01, 10.0, unit="annualized"),
    "vol_scaling.max_gamma": Bound(1e-12, 1e15, unit="delta per unit of price"),
    "vol_scaling.window": Bound(2, 512, kind="integer", unit="returns"),
    "vol_scaling.min_scale": Bound(0.0, 1.0, low_open=True),
    "margin_ladder.steps": Bound(1, 16, kind="length", unit="steps"),
    "margin_ladder.steps.margin_ratio": Bound(0.0, 1000.0, low_open=True),
    "margin_ladder.steps.fraction": Bound(0.0, 1.0, low_open=True),
    "margin_ladder.target_ratio": Bound(1.0, 1000.0),
    "margin_ladder.confidence_k": Bound(0.0, 10.0),
    "limits.cooldown_ms": Bound(0, DAY_MS, kind="integer", unit="ms"),
    "limits.max_commands": Bound(0, 10_000, kind="integer"),
    "limits.rate_window_ms": Bound(0, DAY_MS, kind="integer", unit="ms"),
    "limits.min_trade_notional": Bound(0.0, 1e9, unit="USD"),
    "limits.max_command_notional": Bound(0.0, MAX_QUANTITY, low_open=True,
                                         unit="USD (and >= min_trade_notional)"),
    "limits.slippage_bps": Bound(0.0, 10_000.0, unit="bps"),
    "limits.deadline_ms": Bound(1_000, DAY_MS, kind="integer", unit="ms"),
}


def validate_rules(rules: ScalingRules) -> None:
    """Refuse rules with a field outside `RULE_BOUNDS` (or of the wrong type), a hard limit
    under the band, or a minimum trade above the maximum command notional.

    Raises InvalidRulesError (reason ``invalid_rules``) naming the first such field, its
    value and its bound; range checks of a record come before the checks relating two of
    its fields.
    """
    if rules.delta_band is not None:
        band = _record(rules.delta_band, DeltaBandRule, "delta_band")
        _at_least(band.hard_limit, band.band, "delta_band.hard_limit", "delta_band.band")
    if rules.vol_scaling is not None:
        _record(rules.vol_scaling, VolScalingRule, "vol_scaling")
    if rules.margin_ladder is not None:
        _ladder(rules.margin_ladder)
    limits = _record(rules.limits, CommandLimits, "limits")
    _at_least(limits.max_command_notional, limits.min_trade_notional,
              "limits.max_command_notional", "limits.min_trade_notional")


def _ladder(ladder: MarginLadder) -> None:
    if not isinstance(ladder, MarginLadder):
        raise InvalidRulesError("margin_ladder", ladder, "a MarginLadder")
    steps = ladder.steps
    bound = RULE_BOUNDS["margin_ladder.steps"]
    if not isinstance(steps, Sequence) or isinstance(steps, str):
        raise InvalidRulesError("margin_ladder.steps", steps, f"a list {bound.describe()}")
    if not bound.admits(len(steps)):
        raise InvalidRulesError("margin_ladder.steps", f"{len(steps)} steps",
                                f"a list {bound.describe()}")
    for n, step in enumerate(steps):
        _record(step, MarginStep, f"margin_ladder.steps[{n}]", "margin_ladder.steps")
    _record(ladder, MarginLadder, "margin_ladder", skip=("steps",))


def _record(value: Any, kind: type, path: str, key: str | None = None,
            skip: tuple[str, ...] = ()) -> Any:
    """Check every bounded field of one rule record, in field order; return the record."""
    if not isinstance(value, kind):
        raise InvalidRulesError(path, value, f"a {kind.__name__}")
    for f in fields(value):
        if f.name in skip:
            continue
        item = getattr(value, f.name)
        if f.name == "action":
            if not isinstance(item, LadderAction):
                raise InvalidRulesError(f"{path}.{f.name}", item, "TOP_UP or REDUCE")
            continue
        bound = RULE_BOUNDS[f"{key or path}.{f.name}"]
        if bound.kind == "length":
            if item is not None:
                _check_length(f"{path}.{f.name}", item, bound)
            continue
        _check(f"{path}.{f.name}", item, bound)
    return value


def _check(path: str, value: Any, bound: Bound) -> None:
    """Raise InvalidRulesError unless `value` is a number of the bound's kind inside it."""
    wanted = numbers.Integral if bound.kind == "integer" else numbers.Real
    if not isinstance(value, wanted) or isinstance(value, bool) \
            or (not isinstance(value, numbers.Integral) and not math.isfinite(value)) \
            or not bound.admits(value):
        raise InvalidRulesError(path, value, bound.describe())


def _check_length(path: str, value: Any, bound: Bound) -> None:
    if not isinstance(value, str) or not bound.admits(len(value)):
        raise InvalidRulesError(path, value, f"a string {bound.describe()}")


def _at_least(value: float, floor: float, path: str, floor_path: str) -> None:
    if value < floor:
        raise InvalidRulesError(path, value, f">= {floor_path} ({floor!r})")
