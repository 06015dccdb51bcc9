-- Archive of topic risk.refusals, values aps.ActionRefused.
-- A rule that wanted to act and did not, with the reason (cooldown, rate_limited,
-- max_notional ...). event_time = the event time of the input the engine was applying;
-- rule is the rule label (margin_ladder[1], delta_band:ETH ...); the values map is in record.
-- Dedup: one row per Kafka message; re-archiving it (after a crash) inserts a copy that
-- ReplacingMergeTree collapses on merge. Query with FINAL (or count distinct coordinates).
CREATE TABLE IF NOT EXISTS refusals
(
    topic           String,
    kafka_partition Int32,
    kafka_offset    Int64,
    kafka_key       String,
    kafka_timestamp Int64,
    event_time      Int64,
    event_dt        DateTime('UTC'),
    archived_at     DateTime('UTC'),
    account_id      String,
    rule            String,
    reason          String,
    detail          String,
    record          String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(event_dt)
ORDER BY (topic, kafka_partition, kafka_offset, kafka_timestamp);
