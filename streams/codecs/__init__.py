"""Wire formats. Only this package knows Avro."""

from streams.codecs.avro import decode, decode_datum, encode, encode_datum, registry

__all__ = ["decode", "decode_datum", "encode", "encode_datum", "registry"]
