"""Machine-readable reason codes of the consensus stage.

Three families:

- Rejections (``REJECTION_REASONS``): input that is wrong or suspicious. The observation is
  not used and belongs in the dead-letter topic (``aps.deadletter``) with this reason.
- Drops (``DROP_REASONS``): well-formed input that is simply not news: a duplicate delivery,
  an update older than one already applied, a value already stale on arrival. Not used and
  counted; routine in multi-relayer ingestion, so by default not dead-lettered.
- Exclusions (``EXCLUSION_REASONS``): why an accepted source does not count in one
  consensus output (listed in ``ConsensusPrice.sources_excluded``).

Codes are stable strings: dashboards, the archive and the dead-letter topic key on them.
"""

from __future__ import annotations

# --- rejections: dead-letter ------------------------------------------------------------
# Raised before the engine, by adapters that turn text into observations (the JSON-lines
# reader of `aps oracle consensus`); the Avro adapter uses malformed_avro / bad_framing /
# unknown_schema from streams.errors instead.
MALFORMED_JSON = "malformed_json"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"
UNKNOWN_SOURCE = "unknown_source"
# Raised by the engine.
UNKNOWN_FEED = "unknown_feed"
SOURCE_MISMATCH = "source_mismatch"
INVALID_ROUND_ID = "invalid_round_id"
INVALID_PRICE = "invalid_price"
NON_POSITIVE_PRICE = "non_positive_price"
EMPTY_ROUND = "empty_round"
INVALID_TIMESTAMP = "invalid_timestamp"
ABSURD_EXPONENT = "absurd_exponent"
INVALID_CONFIDENCE = "invalid_confidence"
FUTURE_TIMESTAMP = "future_timestamp"
ROUND_BACKWARDS = "round_backwards"
CONFLICTING_ROUND = "conflicting_round"
TIMESTAMP_BACKWARDS = "timestamp_backwards"
INVALID_SEQUENCER_STATUS = "invalid_sequencer_status"
CLOCK_JUMP = "clock_jump"
PHASE_JUMP = "phase_jump"

# --- drops: counted only ----------------------------------------------------------------
DUPLICATE = "duplicate"
OUT_OF_ORDER = "out_of_order"
STALE = "stale"
CARRIED_OVER_ANSWER = "carried_over_answer"

# --- exclusions from one consensus output ----------------------------------------------
NO_DATA = "no_data"
SEQUENCER_DOWN = "sequencer_down"
SEQUENCER_GRACE = "sequencer_grace"
WIDE_CONFIDENCE = "wide_confidence"
OUTLIER = "outlier"
# STALE (above) is also an exclusion reason: accepted once, too old now.

REJECTION_REASONS = frozenset({
    MALFORMED_JSON, MISSING_FIELD, INVALID_FIELD, UNKNOWN_SOURCE,
    UNKNOWN_FEED, SOURCE_MISMATCH, INVALID_ROUND_ID, INVALID_PRICE, NON_POSITIVE_PRICE,
    EMPTY_ROUND, INVALID_TIMESTAMP, ABSURD_EXPONENT, INVALID_CONFIDENCE, FUTURE_TIMESTAMP,
    ROUND_BACKWARDS, CONFLICTING_ROUND, TIMESTAMP_BACKWARDS, INVALID_SEQUENCER_STATUS,
    CLOCK_JUMP, PHASE_JUMP,
})
DROP_REASONS = frozenset({DUPLICATE, OUT_OF_ORDER, STALE, CARRIED_OVER_ANSWER})
EXCLUSION_REASONS = frozenset({
    NO_DATA, STALE, SEQUENCER_DOWN, SEQUENCER_GRACE, WIDE_CONFIDENCE, OUTLIER,
})


def is_dead_letter(reason: str) -> bool:
    """True if an observation refused for `reason` belongs in the dead-letter topic."""
    return reason not in DROP_REASONS
