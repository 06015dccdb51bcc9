"""Command authentication: HMAC-SHA256 over the Avro encoding of the unsigned command.

The risk worker signs every ScalingCommand it emits; executors refuse (dead-letter) any
command whose signature does not verify, so a command forged onto an execution topic by
anyone without the key is never executed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

from streams.codecs.avro import encode
from streams.domain import ScalingCommand


def _mac(command: ScalingCommand, key: bytes) -> str:
    unsigned = dataclasses.replace(command, signature="")
    return hmac.new(key, encode(unsigned), hashlib.sha256).hexdigest()


def sign(command: ScalingCommand, key: str) -> ScalingCommand:
    """The command with its `signature` set."""
    return dataclasses.replace(command, signature=_mac(command, key.encode()))


def verify(command: ScalingCommand, key: str) -> bool:
    """True when the command's signature was made with `key` over exactly these fields."""
    if not command.signature:
        return False
    return hmac.compare_digest(command.signature, _mac(command, key.encode()))
