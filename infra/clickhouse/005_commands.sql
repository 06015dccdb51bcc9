-- Archive of topic exec.<chain>.commands (every chain), values aps.ScalingCommand.
-- Scaling commands sent to the chain executors. event_time = created_at; price, confidence,
-- price_status, state_version, rules_hash come from the command's provenance; trigger is in record.
-- Dedup: one row per Kafka message; re-archiving it (after a crash) inserts a copy that
-- ReplacingMergeTree collapses on merge. Query with FINAL (or count distinct coordinates).
CREATE TABLE IF NOT EXISTS commands
(
    topic           String,
    kafka_partition Int32,
    kafka_offset    Int64,
    kafka_key       String,
    kafka_timestamp Int64,
    event_time      Int64,
    event_dt        DateTime('UTC'),
    archived_at     DateTime('UTC'),
    command_id      String,
    account_id      String,
    chain           String,
    reason          String,
    rule            String,
    action          String,
    instrument_id   Nullable(String),
    asset           String,
    side            Nullable(String),
    quantity        Float64,
    amount          Float64,
    limit_price     Float64,
    slippage_bps    Float64,
    reduce_only     UInt8,
    created_at      Int64,
    deadline        Int64,
    price           Float64,
    confidence      Float64,
    price_status    String,
    state_version   Int64,
    rules_hash      String,
    signature       String,
    record          String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(event_dt)
ORDER BY (topic, kafka_partition, kafka_offset, kafka_timestamp);
