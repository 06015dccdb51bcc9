"""Executor bounds: what an executor refuses to do whatever a validly signed command says.

Defence in depth. The policy (streams/domain/rules.py `CommandLimits`) already bounds what
the risk worker emits: by default at most 1e6 USD per command, a 30 bps slippage bound, a
60 s deadline, at most 10 commands per account per 10 minutes. An executor checks its own,
wider bounds before it acts, so a bug in the worker (or a stolen command key used
clumsily) cannot move unbounded amounts. Each refusal is a REJECTED execution report whose
reason names the limit (``limit <name>: ...``), so the account's state records it.

The bounds are configured in infra/chains.toml (APS_CHAINS_FILE), table ``[limits]``, with
optional per-chain overrides ``[limits.<chain>]``; any bound not given keeps the default
below. Defaults are ten times (or more) what the policy emits by default, so a normal run
never meets them.

Per-account rate: at most `max_commands_per_account` commands executed per account within
any `rate_window_ms` of event time (the commands' created_at), counted from the commands
the executor accepted. Event time, not wall clock, so a replay decides the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

from streams.domain import CommandAction, ScalingCommand
from streams.errors import ConfigError
from streams.executors.chains import read_chains_file


@dataclass(frozen=True, slots=True)
class ExecutorLimits:
    """An executor's bounds on one command (see the module docstring for the defaults' basis)."""

    max_notional_usd: float = 10_000_000.0
    """Largest trade notional (|quantity| x reference price) or top-up amount, USD."""
    max_quantity: float = 100_000_000.0
    """Largest |quantity| of a trade, units of the underlying."""
    max_deadline_horizon_ms: int = 600_000
    """Largest deadline - created_at, ms."""
    max_slippage_bps: float = 500.0
    """Largest slippage bound a command may ask for, bps."""
    max_commands_per_account: int = 100
    """Commands executed per account within `rate_window_ms` of event time."""
    rate_window_ms: int = 600_000
    """The per-account rate's rolling window, event-time ms."""
    max_clock_lead_ms: int = 600_000
    """How far a command's created_at may be ahead of the executor's clock, ms."""


_INTS = {"max_deadline_horizon_ms", "max_commands_per_account", "rate_window_ms",
         "max_clock_lead_ms"}
_FIELDS = {f.name for f in fields(ExecutorLimits)}


def exceeds(name: str, detail: str, limits: ExecutorLimits) -> str:
    """The reason of a refusal by the limit `name`, e.g. ``limit max_quantity (1e8): ...``."""
    return f"limit {name} ({getattr(limits, name):g}): {detail}"


def check_command(command: ScalingCommand, limits: ExecutorLimits) -> str | None:
    """The reason `command` is refused by the stateless bounds, or None if within them."""
    horizon = command.deadline - command.created_at
    if horizon > limits.max_deadline_horizon_ms:
        return exceeds("max_deadline_horizon_ms",
                       f"deadline is {horizon} ms after created_at", limits)
    if command.action is CommandAction.TOP_UP:
        return _check_top_up(command.amount, limits)
    return _check_trade(command, limits)


def _check_top_up(amount: float, limits: ExecutorLimits) -> str | None:
    if not math.isfinite(amount) or amount <= 0:
        return f"limit top_up_amount: amount {amount!r} is not a finite amount > 0"
    if amount > limits.max_notional_usd:
        return exceeds("max_notional_usd", f"top-up of {amount:g} USD", limits)
    return None


def _check_trade(command: ScalingCommand, limits: ExecutorLimits) -> str | None:
    quantity, slippage = command.quantity, command.slippage_bps
    if not math.isfinite(quantity) or quantity == 0:
        return f"limit quantity: quantity {quantity!r} is not a finite non-zero size"
    if abs(quantity) > limits.max_quantity:
        return exceeds("max_quantity", f"quantity {quantity:g}", limits)
    if not math.isfinite(slippage) or slippage < 0 or slippage > limits.max_slippage_bps:
        return exceeds("max_slippage_bps", f"slippage bound {slippage!r} bps", limits)
    reference = command.trigger.get("reference_price", command.provenance.price)
    if not math.isfinite(reference) or reference <= 0:
        return f"limit reference_price: price {reference!r} is not a finite price > 0"
    notional = abs(quantity) * reference
    if notional > limits.max_notional_usd:
        return exceeds("max_notional_usd", f"notional {notional:g} USD", limits)
    return None


def admit_rate(times: tuple[int, ...], created_at: int,
               limits: ExecutorLimits) -> tuple[int, ...] | None:
    """One account's recent execution times with `created_at` added, or None when the
    account already had `max_commands_per_account` commands in the window ending there.

    `times` are the created_at of the account's executed commands, oldest first; entries
    that fell out of the window are dropped from the result (a pure function of its
    inputs: same sequence of commands, same decisions).
    """
    recent = tuple(t for t in times if t > created_at - limits.rate_window_ms)
    if len(recent) >= limits.max_commands_per_account:
        return None
    return (*recent, created_at)


def rate_refusal(limits: ExecutorLimits) -> str:
    """The reason of a refusal by the per-account rate."""
    return exceeds("max_commands_per_account",
                   f"more than that many commands of the account within "
                   f"rate_window_ms={limits.rate_window_ms}", limits)


def load_executor_limits(path: Path | str, chain: str) -> ExecutorLimits:
    """`chain`'s bounds from the ``[limits]`` table of a chains file (defaults if absent);
    raise ConfigError naming the first problem."""
    path = Path(path)
    raw = read_chains_file(path).get("limits", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [limits] must be a table")
    shared = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    limits = _apply(ExecutorLimits(), shared, f"{path}: [limits]")
    override = raw.get(chain, {})
    return _apply(limits, override, f"{path}: [limits.{chain}]")


def _apply(limits: ExecutorLimits, values: dict[str, object], where: str) -> ExecutorLimits:
    unknown = sorted(set(values) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown limit(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(_FIELDS))}")
    checked = {name: _value(name, value, where) for name, value in values.items()}
    return replace(limits, **checked)  # type: ignore[arg-type]


def _value(name: str, value: object, where: str) -> int | float:
    if name in _INTS:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}: {name} must be an integer >= 1, got {value!r}")
        return value
    if not isinstance(value, int | float) or isinstance(value, bool) \
            or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}: {name} must be a finite number > 0, got {value!r}")
    return float(value)
