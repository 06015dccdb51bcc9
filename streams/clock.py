"""Event-time clocks. Domain code never reads the wall clock; it is handed event time."""

from __future__ import annotations


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
