"""Checkpoints of a risk partition: round trip, and a digest that proves the exact set of
stored entries whatever order they were written or recovered in."""

from __future__ import annotations

from streams.app.checkpoint import Checkpoint, StateDigest, checkpoint_key


def test_a_checkpoint_round_trips_and_anything_else_is_not_one() -> None:
    checkpoint = Checkpoint(1234, 2**128 - 1)
    assert Checkpoint.decode(checkpoint.encode()) == checkpoint
    assert Checkpoint.decode(Checkpoint(-1, 0).encode()) == Checkpoint(-1, 0)
    assert Checkpoint.decode(None) is None
    assert Checkpoint.decode(b"\xc3\x01" + b"\x00" * 30) is None
    assert Checkpoint.decode(checkpoint.encode()[:-1]) is None
    assert checkpoint_key(3) == b"checkpoint-3"
    under_way = Checkpoint(10, 5, 12, 7)
    assert Checkpoint.decode(under_way.encode()) == under_way


def test_a_checkpoint_recognises_its_state_and_the_one_under_way() -> None:
    assert Checkpoint(10, 5).reflected(5) == (10, False)
    assert Checkpoint(10, 5).reflected(7) is None
    under_way = Checkpoint(10, 5, 12, 7)
    assert under_way.reflected(5) == (10, False)
    assert under_way.reflected(7) == (12, True)
    assert under_way.reflected(8) is None


def test_the_digest_depends_on_the_entries_not_on_the_order_of_writes() -> None:
    written = StateDigest()
    written.set("risk-accounts", b"a", b"1")
    written.set("risk-accounts", b"b", b"1")
    written.set("risk-accounts", b"a", b"2")  # overwritten
    written.set("risk-market", b"partition-0", b"m")
    written.set("risk-accounts", b"c", b"x")
    written.delete("risk-accounts", b"c")  # deleted

    recovered = StateDigest()  # what a restarted worker finds, in another order
    recovered.set("risk-market", b"partition-0", b"m")
    recovered.set("risk-accounts", b"b", b"1")
    recovered.set("risk-accounts", b"a", b"2")
    assert recovered.value == written.value and len(recovered) == len(written) == 3


def test_an_older_value_a_missing_or_an_extra_entry_changes_the_digest() -> None:
    def digest(entries: dict[tuple[str, bytes], bytes]) -> int:
        state = StateDigest()
        for (table, key), value in entries.items():
            state.set(table, key, value)
        return state.value

    current = {("risk-accounts", b"a"): b"v2", ("risk-accounts", b"b"): b"v1",
               ("risk-market", b"partition-0"): b"m"}
    reference = digest(current)
    assert digest({**current, ("risk-accounts", b"a"): b"v1"}) != reference
    assert digest({k: v for k, v in current.items() if k[1] != b"b"}) != reference
    assert digest({**current, ("risk-accounts", b"c"): b"v1"}) != reference
    # the same key and value in the other table is another entry
    assert digest({("risk-market", b"a"): b"v2", ("risk-accounts", b"b"): b"v1",
                   ("risk-market", b"partition-0"): b"m"}) != reference
