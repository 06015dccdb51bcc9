"""Writing Faust tables from batched (`take_events`) processing.

Faust decides which table partition (and RocksDB shard) a write belongs to from the
*current event*, which it only sets while iterating a stream one event at a time; inside
`take_events` batches a write raises "Cannot modify table key from outside of stream
iteration" (faust-streaming issue #497). We process a batch per partition and make the
last event of that partition current for the writes, which is exactly what one-at-a-time
iteration would have done. `faust.streams._current_event` is the ContextVar Faust itself
reads; it is private API, pinned by the faust-streaming version in pyproject.toml.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from faust.streams import _current_event
from faust.types import EventT


@contextmanager
def event_context(event: EventT) -> Iterator[None]:
    """Make `event` Faust's current event for table reads and writes in this block."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
