-- Archive of topic risk.inputs, values aps.RiskInput.
-- The risk partitions' ordered logs (what the risk engine consumed, in order).
-- body_type: AccountEvent | ConsensusPrice | ExecutionReport; event_time is the body's.
-- Dedup: one row per Kafka message; re-archiving it (after a crash) inserts a copy that
-- ReplacingMergeTree collapses on merge. Query with FINAL (or count distinct coordinates).
CREATE TABLE IF NOT EXISTS risk_inputs
(
    topic            String,
    kafka_partition  Int32,
    kafka_offset     Int64,
    kafka_key        String,
    kafka_timestamp  Int64,
    event_time       Int64,
    event_dt         DateTime('UTC'),
    archived_at      DateTime('UTC'),
    origin_topic     String,
    origin_partition Int32,
    origin_offset    Int64,
    body_type        String,
    account_id       String,
    asset            String,
    record           String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(event_dt)
ORDER BY (topic, kafka_partition, kafka_offset, kafka_timestamp);
