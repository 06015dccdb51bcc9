-- Archive of topic account.events, values aps.AccountEvent.
-- Changes made to accounts outside APS. event_type: PositionChanged | CollateralChanged |
-- RulesChanged; the columns a type does not have are NULL (rules are in record).
-- Dedup: one row per Kafka message; re-archiving it (after a crash) inserts a copy that
-- ReplacingMergeTree collapses on merge. Query with FINAL (or count distinct coordinates).
CREATE TABLE IF NOT EXISTS account_events
(
    topic           String,
    kafka_partition Int32,
    kafka_offset    Int64,
    kafka_key       String,
    kafka_timestamp Int64,
    event_time      Int64,
    event_dt        DateTime('UTC'),
    archived_at     DateTime('UTC'),
    event_id        String,
    account_id      String,
    event_type      String,
    chain           String,
    instrument_id   Nullable(String),
    quantity        Nullable(Float64),
    entry_price     Nullable(Float64),
    balance_delta   Nullable(Float64),
    reserve_delta   Nullable(Float64),
    record          String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(event_dt)
ORDER BY (topic, kafka_partition, kafka_offset, kafka_timestamp);
