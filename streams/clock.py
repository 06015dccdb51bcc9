"""Event-time clocks. Domain code never reads the wall clock; it is handed event time."""

from __future__ import annotations

import datetime as dt

from streams.errors import ConfigError

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class EventTimeClock:
    """A monotonic clock driven by the event times it is shown (a watermark).

    Live and replay runs advance it from the same ordered input, so decisions that use it
    (deadlines, expiry) come out the same in both.
    """

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def observe(self, event_time_ms: int) -> int:
        """Advance to `event_time_ms` if it is later; return the current time."""
        if event_time_ms > self._now:
            self._now = event_time_ms
        return self._now

    def now(self) -> int:
        """Latest event time seen, epoch milliseconds."""
        return self._now


class BoundedClock:
    """An executor's clock: the latest event time (command created_at) it accepted, across
    every partition it consumes, that no single event can push arbitrarily far ahead.

    `admit` accepts an event time at most `max_lead_ms` beyond the clock, advancing the
    clock to it if later; an event time further ahead is refused and leaves the clock where
    it was, so one future-dated command cannot make every later command expire. An earlier
    event time is accepted and does not move the clock: the command is then judged at the
    clock's time (an old command does not execute because its own partition lagged).

    Time may also really jump (no command at all for longer than the lead). So a jump needs
    two witnesses: when two consecutive events are both beyond the lead, the clock moves to
    the earlier of the two, and the second is judged against it. After such a quiet spell
    one command is refused; a lone future-dated event followed by ordinary ones never moves
    the clock.

    A clock without history (a new executor) takes the first event time it sees, but only
    provisionally: until an event within the lead of the clock confirms it, an event more
    than the lead behind it takes its place (the first was the outlier), so a future-dated
    first command cannot make the ordinary ones after it expire. A restored clock is
    confirmed.
    """

    def __init__(self, max_lead_ms: int, start_ms: int | None = None) -> None:
        self.max_lead_ms = max_lead_ms
        self._now = start_ms
        self._confirmed = start_ms is not None
        self._ahead: int | None = None  # the previous event, if it was refused

    def admit(self, event_time_ms: int) -> int | None:
        """The clock's time after accepting `event_time_ms`, or None if it is refused."""
        if self._now is None or (not self._confirmed
                                 and event_time_ms < self._now - self.max_lead_ms):
            self._now = event_time_ms
        elif not self._confirmed and event_time_ms <= self._now + self.max_lead_ms:
            self._confirmed = True
        if event_time_ms > self._now + self.max_lead_ms and not self._witnessed(event_time_ms):
            return None
        self._ahead = None
        self._now = max(self._now, event_time_ms)
        return self._now

    def _witnessed(self, event_time_ms: int) -> bool:
        """For an event beyond the lead: True if the previous event was beyond it too and,
        once the clock moved to the earlier of the two, this one is within the lead."""
        assert self._now is not None
        previous, self._ahead = self._ahead, event_time_ms
        if previous is None:
            return False
        self._now = max(self._now, min(previous, event_time_ms))
        return event_time_ms <= self._now + self.max_lead_ms

    def restore(self, event_time_ms: int) -> None:
        """Advance to a time this clock (or its predecessor on these partitions) already
        reached, e.g. read back from a changelogged table after a restart."""
        if self._now is None or event_time_ms > self._now:
            self._now = event_time_ms
        self._confirmed = True

    def now(self) -> int | None:
        """The clock's time, epoch ms (None before any event)."""
        return self._now


def utc(event_time_ms: int) -> dt.datetime:
    """Epoch ms as an aware UTC datetime, exactly (no float rounding)."""
    return _EPOCH + dt.timedelta(milliseconds=event_time_ms)


def parse_event_time(text: str) -> int:
    """Epoch ms from epoch-ms digits (``1768478460000``, also ``1768478460000.0`` as
    spreadsheets write it) or an ISO 8601 time (``2026-01-15T12:01:00Z``; no zone: UTC).

    Raises ConfigError naming the text otherwise."""
    raw = text.strip()
    if raw.lstrip("-").isdigit():
        return int(raw)
    try:
        number = float(raw)
    except ValueError:
        pass
    else:
        if number.is_integer():
            return int(number)
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"{raw!r} is neither epoch milliseconds nor an ISO 8601 time "
                          "(e.g. 2026-01-15T12:03:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(milliseconds=1)


def iso_utc(event_time_ms: int) -> str:
    """Epoch ms as ISO 8601 UTC with milliseconds, e.g. ``2026-01-15T12:01:00.000Z``."""
    return utc(event_time_ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")
