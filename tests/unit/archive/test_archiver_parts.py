"""Pure parts of the archiver: backoff, batch age, the progress line."""

from __future__ import annotations

from itertools import islice

from streams.archive.archiver import ArchiverProgress, Backoff, _oldest_age
from streams.cli.archive import progress_line


def test_backoff_doubles_up_to_its_cap() -> None:
    assert list(islice(Backoff(0.5, 10.0).delays(), 7)) == [0.5, 1, 2, 4, 8, 10, 10]


def test_a_batch_is_as_old_as_its_oldest_message() -> None:
    now = 1_700_000_100.0
    assert _oldest_age([1_700_000_099_000, 1_700_000_040_000, -1], now) == 60.0
    assert _oldest_age([-1, -1], now) is None  # no Kafka timestamps
    assert _oldest_age([1_700_000_200_000], now) == 0.0  # a producer clock ahead of ours


def test_the_progress_line_says_what_the_archiver_waits_for() -> None:
    waiting = ArchiverProgress(messages=10, rows_by_table={"commands": 10}, lag=5,
                               assigned_partitions=4, retries=3, unavailable_s=12.4,
                               lag_seconds=1.5)
    assert progress_line(waiting) == (
        "archiver: 10 messages (commands 10); lag 5 messages (last batch 1.5 s behind); "
        "ClickHouse unavailable for 12 s, retrying (3 failed attempts so far)")
    done = ArchiverProgress(messages=10, lag=0, assigned_partitions=4)
    assert progress_line(done).endswith("; caught up")  # what tests and scripts wait for
