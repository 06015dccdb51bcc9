"""Replaying recorded periods of risk.inputs: the audit (`aps replay`) and the what-if.

sources: where the record is read (the archive, or the retained topics); replayer: the
engine re-run over a partition's log; diff: recorded against replayed commands (pure);
report: the versioned JSON report and its terminal summary; audit and whatif: the two
uses, which never mix (docs/replay.md).
"""
