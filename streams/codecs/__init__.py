"""Wire formats. Only this package knows Avro."""

from streams.codecs.avro import (
    decode,
    decode_datum,
    encode,
    encode_datum,
    encode_risk_input,
    registry,
)

__all__ = ["decode", "decode_datum", "encode", "encode_datum", "encode_risk_input", "registry"]
