"""Checking the signature of a received command or report, and saying loudly when the sender's
key is not ours (a misconfiguration, not an attack, until shown otherwise)."""

from __future__ import annotations

import logging

from streams.app.metrics import KEY_MISMATCH
from streams.codecs.signing import key_id, signature_key_id, verify, verify_encoded
from streams.domain import ExecutionReport, ScalingCommand

log = logging.getLogger(__name__)


class SignatureCheck:
    """Verifies records signed with one key (APS_COMMAND_KEY or APS_REPORT_KEY).

    A record whose signature claims another key id than ours is counted in
    aps_key_mismatch_total and, the first time, logged at CRITICAL: the signer and this
    process were most likely given different keys, and every record will be refused until
    they agree. The record is refused all the same (the key id is a hint, anyone can write
    one, so it never makes a record acceptable).
    """

    def __init__(self, stage: str, key: str, variable: str, signer: str) -> None:
        self.stage = stage
        self.key = key
        self.key_id = key_id(key)
        self.variable = variable
        self.signer = signer
        self.mismatch_reported = False

    def authentic(self, record: ScalingCommand | ExecutionReport,
                  encoded: bytes | None = None) -> bool:
        """True if `record`'s signature verifies with our key (over `encoded`, the bytes it
        was decoded from, when given); notes a key-id mismatch."""
        if (verify(record, self.key) if encoded is None
                else verify_encoded(record, encoded, self.key)):
            return True
        claimed = signature_key_id(record)
        if claimed is not None and claimed != self.key_id:
            self._mismatch(claimed)
        return False

    def _mismatch(self, claimed: str) -> None:
        KEY_MISMATCH.labels(self.stage).inc()
        if self.mismatch_reported:
            return
        self.mismatch_reported = True
        log.critical("%s: records signed with key id %s, but this process's %s has key id %s:"
                     " the %s and this process were given different keys; every such record"
                     " is refused until %s is the same on both", self.stage, claimed,
                     self.variable, self.key_id, self.signer, self.variable)
