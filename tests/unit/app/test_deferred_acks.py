"""A batch handed over with `defer_ack` is acked only once its step completed; steps run in
the order of their batches, at most SETTLE_DEPTH at once, and a failed step stops the acks
after it and fails the agent at its next batch."""

from __future__ import annotations

import asyncio

import pytest

from streams.app.batching import SETTLE_DEPTH, ReadyBatchStream
from streams.app.factory import ApsApp


def _stream() -> tuple[ReadyBatchStream, list[str]]:
    """A stream of APS's app whose acks are recorded (by batch name) instead of sent."""
    app = ApsApp("deferred-test", broker="kafka://127.0.0.1:1", autodiscover=False,
                 Stream=ReadyBatchStream)
    stream = app.stream(app.channel())
    assert isinstance(stream, ReadyBatchStream)
    acked: list[str] = []

    async def ack_batch(batch: list) -> None:
        acked.extend(batch)
    stream._ack_batch = ack_batch  # type: ignore[method-assign]
    return stream, acked


def test_steps_run_in_order_and_each_batch_is_acked_after_its_step() -> None:
    async def run() -> None:
        stream, acked = _stream()
        started: list[str] = []
        gates = {name: asyncio.Event() for name in ("a", "b")}

        async def step(name: str) -> None:
            started.append(name)
            await gates[name].wait()
        await stream._defer(["a"], step("a"))
        await stream._defer(["b"], step("b"))
        await asyncio.sleep(0.01)
        assert started == ["a"] and acked == []  # b's step waits for a's
        gates["b"].set()
        await asyncio.sleep(0.01)
        assert started == ["a"] and acked == []
        gates["a"].set()
        await asyncio.sleep(0.01)
        assert started == ["a", "b"] and acked == ["a", "b"]
    asyncio.run(run())


def test_the_agent_waits_while_too_many_steps_are_under_way() -> None:
    async def run() -> None:
        stream, acked = _stream()
        gate = asyncio.Event()
        for n in range(SETTLE_DEPTH):
            await stream._defer([str(n)], gate.wait())
        third = asyncio.ensure_future(stream._defer(["last"], gate.wait()))
        await asyncio.sleep(0.01)
        assert not third.done()
        gate.set()
        await asyncio.wait_for(third, 1)
        await asyncio.sleep(0.01)
        assert acked == [*map(str, range(SETTLE_DEPTH)), "last"]
    asyncio.run(run())


def test_a_failed_step_acks_nothing_after_it_and_fails_the_next_batch() -> None:
    async def run() -> None:
        stream, acked = _stream()

        async def fail() -> None:
            raise RuntimeError("the broker refused a send")

        async def fine() -> None:
            return None
        stream.app.crash = lambda exc: asyncio.sleep(0)  # type: ignore[method-assign]
        await stream._defer(["a"], fail())
        await stream._defer(["b"], fine())
        await asyncio.sleep(0.01)
        assert acked == []
        with pytest.raises(RuntimeError):
            await stream._defer(["c"], fine())
    asyncio.run(run())
