"""Message authentication: HMAC-SHA256 over the Avro encoding of a record, for commands and
execution reports alike.

The risk worker signs every ScalingCommand it emits with APS_COMMAND_KEY and executors
refuse (dead-letter) any command whose signature does not verify; executors sign every
ExecutionReport with their own APS_REPORT_KEY and the risk stage refuses any report whose
signature does not verify. Anyone able to write to a topic but without the key can neither
forge nor alter a record that will be acted on.

A signature reads ``<key id>:<hex mac>``. The key id (`key_id`: the first 8 hex digits of
SHA-256 of the key) says which key signed, so a receiver whose key differs can say so
instead of reporting forgeries; it reveals nothing usable about the key. The MAC is
computed over the Avro encoding of the record whose `signature` field holds only the key
id, so the key id is covered too.

`signature` is the last field of both schemas, so a signed record's encoding is the MAC's
input with only its last string changed: `sign_encoded` encodes a record once to sign it
and send it, and `verify_encoded` checks a received record over the bytes it came in,
without encoding it again (any byte changed outside the signature fails, even one that
would decode to the same values).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from typing import TypeVar

from streams.codecs.avro import encode, zigzag_long
from streams.domain import ExecutionReport, ScalingCommand

Signed = TypeVar("Signed", ScalingCommand, ExecutionReport)

KEY_ID_LEN = 8
_SEPARATOR = ":"


def key_id(key: str) -> str:
    """Short public id of `key`: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:KEY_ID_LEN]


def _unsigned(record: ScalingCommand | ExecutionReport, kid: str) -> bytes:
    """The MAC's input: the encoding of `record` whose signature holds only the key id."""
    return encode(dataclasses.replace(record, signature=kid))


def _signature(kid: str, key: str, unsigned: bytes) -> str:
    """``<key id>:<mac>`` made with `key` over the encoding `unsigned`."""
    return f"{kid}{_SEPARATOR}{hmac.new(key.encode(), unsigned, hashlib.sha256).hexdigest()}"


def sign(record: Signed, key: str) -> Signed:
    """The record with its `signature` set to ``<key id>:<mac>`` made with `key`."""
    kid = key_id(key)
    return dataclasses.replace(record, signature=_signature(kid, key, _unsigned(record, kid)))


def signature_key_id(record: ScalingCommand | ExecutionReport) -> str | None:
    """The key id a record's signature claims (None if it carries no well-formed one)."""
    kid, sep, mac = record.signature.partition(_SEPARATOR)
    if not sep or len(kid) != KEY_ID_LEN or not mac:
        return None
    return kid


def verify(record: ScalingCommand | ExecutionReport, key: str) -> bool:
    """True when the record's signature was made with `key` over exactly these fields."""
    return verify_encoded(record, encode(record), key)


def _avro_string(text: str) -> bytes:
    raw = text.encode()
    return zigzag_long(len(raw)) + raw


def _with_signature(encoded: bytes, old: str, new: str) -> bytes | None:
    """`encoded` (a record whose last field, the signature, is `old`) with signature `new`;
    None if it does not end with `old`."""
    suffix = _avro_string(old)
    if not encoded.endswith(suffix):
        return None
    return encoded[: len(encoded) - len(suffix)] + _avro_string(new)


def sign_encoded(record: ScalingCommand | ExecutionReport, key: str) -> bytes:
    """``encode(sign(record, key))``, encoding the record once."""
    kid = key_id(key)
    unsigned = _unsigned(record, kid)
    signed = _with_signature(unsigned, kid, _signature(kid, key, unsigned))
    assert signed is not None  # the encoding ends with the signature written just now
    return signed


def verify_encoded(record: ScalingCommand | ExecutionReport, encoded: bytes, key: str) -> bool:
    """True when `record`, decoded from `encoded`, was signed with `key` over exactly these
    bytes (`verify` over the record's own encoding, without encoding it again)."""
    kid = signature_key_id(record)
    if kid is None:
        return False
    unsigned = _with_signature(encoded, record.signature, kid)
    if unsigned is None:
        return False
    return hmac.compare_digest(record.signature, _signature(kid, key, unsigned))
