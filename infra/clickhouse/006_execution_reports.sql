-- Archive of topic execution.reports, values aps.ExecutionReport.
-- What the executors did with each command. event_time = executed_at.
-- Dedup: one row per Kafka message; re-archiving it (after a crash) inserts a copy that
-- ReplacingMergeTree collapses on merge. Query with FINAL (or count distinct coordinates).
CREATE TABLE IF NOT EXISTS execution_reports
(
    topic           String,
    kafka_partition Int32,
    kafka_offset    Int64,
    kafka_key       String,
    kafka_timestamp Int64,
    event_time      Int64,
    event_dt        DateTime('UTC'),
    archived_at     DateTime('UTC'),
    report_id       String,
    command_id      String,
    account_id      String,
    chain           String,
    status          String,
    reason          String,
    action          String,
    instrument_id   Nullable(String),
    filled_quantity Float64,
    fill_price      Float64,
    fee             Float64,
    top_up_amount   Float64,
    executed_at     Int64,
    venue           String,
    record          String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(event_dt)
ORDER BY (topic, kafka_partition, kafka_offset, kafka_timestamp);
