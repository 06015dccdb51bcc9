"""Domain value types: plain, immutable records that mirror the Avro schemas in schemas/."""

from streams.domain.account import (
    AccountEvent,
    AccountState,
    CollateralChanged,
    Exposure,
    PendingCommand,
    PositionChanged,
    RulesChanged,
    Valuation,
)
from streams.domain.commands import ActionRefused, ExecutionReport, Provenance, ScalingCommand
from streams.domain.consensus import ConsensusAssetState, ConsensusState, OracleFeedState
from streams.domain.enums import (
    CommandAction,
    CommandReason,
    ExecutionStatus,
    InstrumentKind,
    LadderAction,
    OptionType,
    OracleSource,
    PriceStatus,
    PricingModel,
    Side,
)
from streams.domain.envelopes import DeadLetter, RiskInput
from streams.domain.instruments import Collateral, Instrument, Position
from streams.domain.market import AssetMarket, MarketState
from streams.domain.oracle import (
    ChainlinkRound,
    ConsensusPrice,
    ExcludedSource,
    OracleObservation,
    PythPriceUpdate,
)
from streams.domain.rules import (
    CommandLimits,
    DeltaBandRule,
    MarginLadder,
    MarginStep,
    ScalingRules,
    VolScalingRule,
)

__all__ = [
    "AccountEvent",
    "AccountState",
    "ActionRefused",
    "AssetMarket",
    "ChainlinkRound",
    "Collateral",
    "CollateralChanged",
    "CommandAction",
    "CommandLimits",
    "CommandReason",
    "ConsensusAssetState",
    "ConsensusPrice",
    "ConsensusState",
    "DeadLetter",
    "DeltaBandRule",
    "ExcludedSource",
    "ExecutionReport",
    "ExecutionStatus",
    "Exposure",
    "Instrument",
    "InstrumentKind",
    "LadderAction",
    "MarginLadder",
    "MarginStep",
    "MarketState",
    "OptionType",
    "OracleFeedState",
    "OracleObservation",
    "OracleSource",
    "PendingCommand",
    "Position",
    "PositionChanged",
    "PriceStatus",
    "PricingModel",
    "Provenance",
    "PythPriceUpdate",
    "RiskInput",
    "RulesChanged",
    "ScalingCommand",
    "ScalingRules",
    "Side",
    "Valuation",
    "VolScalingRule",
]
