"""Event-time clocks (the executor's, bounded against future-dated commands) and parsing
event times."""

from __future__ import annotations

import pytest

from streams.clock import BoundedClock, iso_utc, parse_event_time
from streams.errors import ConfigError

LEAD = 60_000


def test_the_first_event_sets_a_clock_without_history() -> None:
    clock = BoundedClock(LEAD)
    assert clock.now() is None and clock.admit(5_000_000) == 5_000_000


def test_later_events_within_the_lead_advance_it_and_earlier_ones_do_not() -> None:
    clock = BoundedClock(LEAD, start_ms=100_000)
    assert clock.admit(150_000) == 150_000
    assert clock.admit(120_000) == 150_000  # an old command is judged at the clock's time
    assert clock.now() == 150_000


def test_a_future_dated_event_is_refused_and_does_not_move_the_clock() -> None:
    clock = BoundedClock(LEAD, start_ms=100_000)
    assert clock.admit(100_000 + LEAD + 1) is None
    assert clock.now() == 100_000
    assert clock.admit(101_000) == 101_000  # the next ordinary command runs normally
    assert clock.admit(100_000_000) is None  # a lone outlier again: still refused
    assert clock.admit(102_000) == 102_000
    assert clock.admit(100_000 + LEAD) == 100_000 + LEAD  # exactly at the bound: accepted


def test_a_real_jump_needs_two_consecutive_witnesses_and_takes_the_earlier() -> None:
    clock = BoundedClock(LEAD, start_ms=0)
    assert clock.admit(10_000_000) is None  # after a quiet spell: the first is refused
    assert clock.admit(10_001_000) == 10_001_000  # the second confirms time moved
    assert clock.admit(10_000_500) == 10_001_000


def test_two_outliers_move_the_clock_to_the_earlier_one_only() -> None:
    clock = BoundedClock(LEAD, start_ms=0)
    assert clock.admit(900_000_000) is None
    assert clock.admit(5_000_000) == 5_000_000  # within the lead of the earlier witness
    assert clock.admit(900_000_000) is None


def test_restore_only_moves_forward() -> None:
    clock = BoundedClock(LEAD)
    clock.restore(50_000)
    clock.restore(40_000)
    assert clock.now() == 50_000 and clock.admit(200_000) is None


def test_a_future_dated_first_event_gives_way_to_the_ordinary_ones_after_it() -> None:
    clock = BoundedClock(LEAD)
    assert clock.admit(10 * 365 * 86_400_000) is not None  # a new executor's first command
    assert clock.admit(1_000) == 1_000  # the outlier does not hold the clock
    assert clock.admit(2_000) == 2_000
    assert clock.admit(10 * 365 * 86_400_000) is None  # now confirmed: refused as any other


def test_a_confirmed_or_restored_clock_does_not_go_back() -> None:
    clock = BoundedClock(LEAD)
    clock.admit(1_000_000)
    clock.admit(1_010_000)  # confirms
    assert clock.admit(1_000) == 1_010_000
    restored = BoundedClock(LEAD)
    restored.restore(1_000_000)
    assert restored.admit(1_000) == 1_000_000


def test_event_times_in_epoch_ms_or_iso_8601() -> None:
    assert parse_event_time("1584003480000") == 1_584_003_480_000
    assert parse_event_time("1584003480000.0") == 1_584_003_480_000  # as spreadsheets write
    assert parse_event_time("2020-03-12T08:58:00Z") == 1_584_003_480_000
    assert parse_event_time("2020-03-12T08:58:00") == 1_584_003_480_000  # no zone: UTC
    assert parse_event_time("2020-03-12T09:58:00.250+01:00") == 1_584_003_480_250
    with pytest.raises(ConfigError, match="neither epoch milliseconds nor an ISO 8601"):
        parse_event_time("yesterday")


def test_iso_utc_is_exact_to_the_millisecond() -> None:
    assert iso_utc(1_584_003_480_250) == "2020-03-12T08:58:00.250Z"
    assert parse_event_time(iso_utc(1_768_478_460_379)) == 1_768_478_460_379
