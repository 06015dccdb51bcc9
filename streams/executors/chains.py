"""Chain profiles (infra/chains.toml): settlement latency and simulated-venue costs per chain.

One profile per chain serves every place that settles a command: the chain executors and
the offline runs (`aps simulate`, the offline side of the `aps run` summary). Settlement is
modelled in event time, `block_time_ms * confirmations` after the command's creation, so a
live run and an offline run over the same prices settle each command at the same instant.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from streams.errors import ConfigError
from streams.executors.venue import VenueParams


@dataclass(frozen=True, slots=True)
class ChainProfile:
    """How one chain settles commands and what the simulated venue on it costs."""

    chain: str
    block_time_ms: int
    confirmations: int
    fee_bps: float
    base_slippage_bps: float
    impact_bps_per_million: float

    @property
    def settlement_ms(self) -> int:
        """Event time from a command's creation to its execution, ms."""
        return self.block_time_ms * self.confirmations

    def venue(self) -> VenueParams:
        """Parameters of the simulated venue serving this chain."""
        return VenueParams(f"sim-{self.chain}", fee_bps=self.fee_bps,
                           base_slippage_bps=self.base_slippage_bps,
                           impact_bps_per_million=self.impact_bps_per_million,
                           settlement_ms=self.settlement_ms)


_NUMBERS = {f.name for f in fields(ChainProfile)} - {"chain"}


@dataclass(frozen=True, slots=True)
class ChainProfiles:
    """Every configured chain's profile, and the default for chains not listed."""

    by_chain: dict[str, ChainProfile]
    default: ChainProfile

    def profile(self, chain: str) -> ChainProfile:
        """The profile of `chain` (the default profile, named after it, if not listed)."""
        found = self.by_chain.get(chain)
        if found is not None:
            return found
        values = {name: getattr(self.default, name) for name in _NUMBERS}
        return ChainProfile(chain=chain, **values)

    def settlement_ms(self) -> dict[str, int]:
        """Settlement latency of every listed chain, ms."""
        return {chain: p.settlement_ms for chain, p in sorted(self.by_chain.items())}


def read_chains_file(path: Path) -> dict[str, object]:
    """The parsed TOML of a chains file; ConfigError if it is missing or not TOML."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"chains file {path} does not exist (APS_CHAINS_FILE)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"chains file {path} is not valid TOML: {exc}") from None


def load_chain_profiles(path: Path | str) -> ChainProfiles:
    """Parse and validate a chains file; raise ConfigError naming the first problem."""
    path = Path(path)
    raw = read_chains_file(path)
    unknown = sorted(set(raw) - {"chains", "default", "limits"})  # limits: executors.limits
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}")
    if "default" not in raw:
        raise ConfigError(f"{path}: a [default] profile is required")
    default = _profile(path, "default", raw["default"])
    chains = raw.get("chains", {})
    if not isinstance(chains, dict):
        raise ConfigError(f"{path}: [chains] must be a table of chain profiles")
    by_chain = {name: _profile(path, name, body) for name, body in chains.items()}
    return ChainProfiles(by_chain, default)


def _profile(path: Path, name: str, body: object) -> ChainProfile:
    where = f"{path}: profile {name!r}"
    if not isinstance(body, dict):
        raise ConfigError(f"{where} must be a table")
    missing = sorted(_NUMBERS - set(body))
    extra = sorted(set(body) - _NUMBERS)
    if missing or extra:
        raise ConfigError(f"{where}: missing {missing or 'nothing'}, unknown {extra or 'none'}")
    for key in ("block_time_ms", "confirmations"):
        value = body[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: {key} must be an integer >= 0, got {value!r}")
    for key in ("fee_bps", "base_slippage_bps", "impact_bps_per_million"):
        value = body[key]
        if not isinstance(value, int | float) or isinstance(value, bool) \
                or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{where}: {key} must be a number >= 0, got {value!r}")
    return ChainProfile(chain=name, block_time_ms=body["block_time_ms"],
                        confirmations=body["confirmations"], fee_bps=float(body["fee_bps"]),
                        base_slippage_bps=float(body["base_slippage_bps"]),
                        impact_bps_per_million=float(body["impact_bps_per_million"]))
