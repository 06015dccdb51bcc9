-- Archive of topic aps-risk-accounts-changelog (Faust table risk-accounts), values aps.AccountState.
-- Every version of every account's risk state. event_time = last_event_time; a deleted
-- key is a row with deleted = 1 (record = 'null'). Latest state per account:
-- argMax(column, (kafka_timestamp, kafka_offset)) grouped by account_id.
-- Dedup: one row per Kafka message; re-archiving it (after a crash) inserts a copy that
-- ReplacingMergeTree collapses on merge. Query with FINAL (or count distinct coordinates).
CREATE TABLE IF NOT EXISTS account_states
(
    topic                String,
    kafka_partition      Int32,
    kafka_offset         Int64,
    kafka_key            String,
    kafka_timestamp      Int64,
    event_time           Int64,
    event_dt             DateTime('UTC'),
    archived_at          DateTime('UTC'),
    account_id           String,
    deleted              UInt8,
    version              Int64,
    positions            UInt32,
    pending              UInt32,
    rules_hash           String,
    equity               Nullable(Float64),
    maintenance_margin   Nullable(Float64),
    margin_ratio         Nullable(Float64),
    stress_loss          Nullable(Float64),
    min_margin_ratio     Float64,
    breached_maintenance UInt8,
    collateral           Float64,
    reserve              Float64,
    record               String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(event_dt)
ORDER BY (topic, kafka_partition, kafka_offset, kafka_timestamp);
