"""The run summary's worst lag of the market phase, from histogram snapshots."""

from __future__ import annotations

from streams.run.metrics import worst_wait_between

INF = float("inf")


def test_the_worst_lag_is_the_smallest_bound_holding_every_batch_of_the_window() -> None:
    # before the market: a 12 s book load (past the 10 s bucket); during it: nothing over 1 s
    before = {"sequencer": {0.1: 3, 1.0: 3, 10.0: 3, INF: 4}, "risk": {0.1: 5, 1.0: 5, INF: 5}}
    after = {"sequencer": {0.1: 40, 1.0: 41, 10.0: 41, INF: 42},
             "risk": {0.1: 9, 1.0: 12, INF: 12}, "consensus": {0.1: 1, 1.0: 1, INF: 1}}
    worst = worst_wait_between(before, after)
    assert worst == {"sequencer": 1.0, "risk": 1.0, "consensus": 0.1}


def test_a_batch_beyond_the_last_bucket_is_unbounded_and_an_idle_stage_is_absent() -> None:
    before = {"risk": {0.1: 2, INF: 2}, "executor": {0.1: 7, INF: 7}}
    after = {"risk": {0.1: 2, INF: 3}, "executor": {0.1: 7, INF: 7}}
    assert worst_wait_between(before, after) == {"risk": INF}
