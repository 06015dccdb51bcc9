"""The price gate: one price per asset in flight, the newest one published when the risk
stage has applied the previous one on every partition the worker owns."""

from __future__ import annotations

from streams.app.pricegate import PriceGate


class _Published:
    def __init__(self) -> None:
        self.sequences: list[tuple[str, int]] = []

    def __call__(self, asset: str, sequence: int) -> tuple[str, int, object]:
        return asset, sequence, lambda: self.sequences.append((asset, sequence))


def test_without_local_partitions_every_price_is_published_at_once() -> None:
    gate, out = PriceGate(), _Published()
    for sequence in (1, 2, 3):
        assert gate.offer(*out("ETH", sequence))
    assert out.sequences == [("ETH", 1), ("ETH", 2), ("ETH", 3)]


def test_a_price_waits_for_the_previous_one_on_every_partition_and_only_the_newest_goes() -> None:
    gate, out = PriceGate(), _Published()
    gate.assign({0, 1})
    assert gate.offer(*out("ETH", 1))
    assert not gate.offer(*out("ETH", 2))
    assert not gate.offer(*out("ETH", 3))  # supersedes 2
    assert gate.offer(*out("BTC", 1))  # another asset is not held back
    gate.applied("ETH", 1, 0)
    assert out.sequences == [("ETH", 1), ("BTC", 1)] and gate.held() == 1
    gate.applied("ETH", 1, 1)
    assert out.sequences == [("ETH", 1), ("BTC", 1), ("ETH", 3)] and gate.held() == 0


def test_an_older_price_applied_does_not_release_the_next() -> None:
    gate, out = PriceGate(), _Published()
    gate.assign({0})
    gate.offer(*out("ETH", 5))
    gate.offer(*out("ETH", 6))
    gate.applied("ETH", 4, 0)  # a price published before the gate saw it
    assert out.sequences == [("ETH", 5)]
    gate.applied("ETH", 5, 0)
    assert out.sequences == [("ETH", 5), ("ETH", 6)]


def test_losing_the_partitions_releases_what_was_held() -> None:
    gate, out = PriceGate(), _Published()
    gate.assign({0, 1})
    gate.offer(*out("ETH", 1))
    gate.offer(*out("ETH", 2))
    gate.assign({0})  # partition 1 went to another worker
    assert out.sequences == [("ETH", 1)]
    gate.assign(set())
    assert out.sequences == [("ETH", 1), ("ETH", 2)]
    assert gate.offer(*out("ETH", 3))
