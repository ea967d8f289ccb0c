"""The one codec: Confluent wire framing around fastavro schemaless bodies.

A message value is::

    byte 0      magic byte, always 0
    bytes 1..4  schema id, unsigned 32-bit big-endian (from the registry)
    bytes 5..   the record, Avro binary encoding, no container header

exactly what Confluent's serializers write, so any Confluent-compatible consumer reads it.
Decoding resolves the writer schema (from the id) against the current reader schema of the same
record, so data written by an older or newer compatible version decodes into today's shape.

Every decoding failure is a ``DecodeError`` with a machine-readable ``reason`` (the dead-letter
reason code): ``missing_value``, ``bad_magic``, ``truncated``, ``unknown_schema_id``,
``wrong_record_type``, ``malformed``. Nothing else escapes ``decode`` for bad input.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from collections.abc import Iterable, Mapping
from typing import Any, cast

from fastavro import schemaless_reader, schemaless_writer

from pipelines.events.registry import Registry, RegistryUnavailable, UnknownSchemaId, open_registry

MAGIC = 0
HEADER = struct.Struct(">bI")
HEADER_SIZE = HEADER.size  # 5


class DecodeError(ValueError):
    """A message value that cannot be decoded; ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str = "", schema_id: int | None = None, record: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.schema_id = schema_id
        self.record = record


class EncodeError(ValueError):
    """A datum that does not fit its schema (a bug in the producer, never data from the wire)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded value: its record short name, the writer's schema id and the datum."""

    record: str
    schema_id: int
    value: dict[str, Any]


def frame(schema_id: int, body: bytes) -> bytes:
    return HEADER.pack(MAGIC, schema_id) + body


def parse_header(data: bytes | None) -> int:
    """The schema id of a framed value; ``DecodeError`` when the framing is wrong."""
    if data is None or len(data) == 0:
        raise DecodeError("missing_value", "empty or null message value")
    if data[0] != MAGIC:
        raise DecodeError("bad_magic", f"first byte is {data[0]:#04x}, not the Confluent magic byte 0x00")
    if len(data) < HEADER_SIZE:
        raise DecodeError("truncated", f"{len(data)} bytes, shorter than the 5-byte header")
    return HEADER.unpack_from(data)[1]


class Codec:
    """Encode and decode framed Avro records. One instance per process, shared by every client.

    ``expected`` (a record name, or a set of them) makes ``decode`` reject other record types with
    ``wrong_record_type`` -- e.g. an ``IndexPrice`` on the positions topic.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or open_registry()
        self.schemas = self.registry.schemas
        self._encoders: dict[str, tuple[bytes, Any]] = {}
        # schema id -> (record short name, writer parsed, reader parsed or None when identical)
        self._decoders: dict[int, tuple[str, Any, Any]] = {}

    # ---------------------------------------------------------------- encode

    def _encoder(self, record: str) -> tuple[bytes, Any]:
        enc = self._encoders.get(record)
        if enc is None:
            schema = self.schemas[record]
            header = HEADER.pack(MAGIC, self.registry.id_for(schema.name))
            enc = self._encoders[record] = self._encoders[schema.name] = self._encoders[schema.fullname] = (
                header, schema.parsed)
        return enc

    def schema_id(self, record: str) -> int:
        return HEADER.unpack(self._encoder(record)[0])[1]

    def encode(self, record: str, datum: Mapping[str, Any]) -> bytes:
        """Framed bytes of ``datum`` as the current schema of ``record``."""
        header, parsed = self._encoder(record)
        out = io.BytesIO()
        out.write(header)
        try:
            schemaless_writer(out, parsed, datum)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError, struct.error) as exc:
            raise EncodeError(f"{record}: cannot encode {exc.__class__.__name__}: {exc}") from exc
        return out.getvalue()

    def encode_many(self, record: str, data: Iterable[Mapping[str, Any]]) -> list[bytes]:
        header, parsed = self._encoder(record)
        result = []
        out = io.BytesIO()
        for datum in data:
            out.seek(0)
            out.truncate()
            out.write(header)
            try:
                schemaless_writer(out, parsed, datum)
            except (TypeError, ValueError, KeyError, AttributeError, OverflowError, struct.error) as exc:
                raise EncodeError(f"{record}: cannot encode {exc.__class__.__name__}: {exc}") from exc
            result.append(out.getvalue())
        return result

    def key(self, record: str, datum: Mapping[str, Any]) -> bytes:
        """The Kafka key for ``datum``: its ``backstop.key`` field, UTF-8."""
        return self.schemas[record].key_of(datum).encode()

    # ---------------------------------------------------------------- decode

    def _decoder(self, schema_id: int) -> tuple[str, Any, Any]:
        dec = self._decoders.get(schema_id)
        if dec is None:
            try:
                writer = self.registry.writer_schema(schema_id)
            except UnknownSchemaId:
                raise DecodeError("unknown_schema_id", f"no schema with id {schema_id}", schema_id) from None
            if writer.name not in self.schemas:
                raise DecodeError("wrong_record_type", f"schema id {schema_id} is {writer.fullname}, "
                                  "which this process does not read", schema_id, writer.name)
            reader = self.schemas[writer.name]
            same = reader.fingerprint == _fingerprint_of(writer.json)
            dec = self._decoders[schema_id] = (writer.name, writer.parsed, None if same else reader.parsed)
        return dec

    def decode(self, data: bytes | None, expected: str | frozenset[str] | set[str] | None = None) -> Decoded:
        """Decode one framed value; ``DecodeError`` (with a reason code) for anything malformed.

        ``RegistryUnavailable`` propagates: a registry outage is not the message's fault.
        """
        schema_id = parse_header(data)
        assert data is not None  # parse_header refuses a null value
        record, writer, reader = self._decoder(schema_id)
        if expected is not None and record != expected and (isinstance(expected, str) or record not in expected):
            wanted = expected if isinstance(expected, str) else sorted(expected)
            raise DecodeError("wrong_record_type", f"expected {wanted}, got {record} (schema id {schema_id})",
                              schema_id, record)
        buf = io.BytesIO(data)
        buf.seek(HEADER_SIZE)
        try:
            value = schemaless_reader(buf, writer, reader)
        except (EOFError, StopIteration, IndexError) as exc:
            raise DecodeError("truncated", f"body ends early ({len(data)} bytes): {exc!r}", schema_id, record) from None
        except RegistryUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types on garbage bodies
            raise DecodeError("malformed", f"{exc.__class__.__name__}: {exc}", schema_id, record) from None
        if buf.tell() != len(data):
            raise DecodeError("malformed", f"{len(data) - buf.tell()} trailing bytes after the record",
                              schema_id, record)
        return Decoded(record, schema_id, cast(dict[str, Any], value))  # a record schema reads as a dict

    def decode_many(self, values: Iterable[bytes], expected: str | None = None) -> list[Decoded]:
        """Decode a batch; raises on the first bad value (use the dead-letter loop for mixed input)."""
        return [self.decode(v, expected) for v in values]


def _fingerprint_of(schema_json: Any) -> str:
    from pipelines.events.schemas import fingerprint

    return fingerprint(schema_json)


_default: Codec | None = None


def default_codec() -> Codec:
    """The process-wide codec on the configured registry (embedded unless a URL is set)."""
    global _default
    if _default is None:
        _default = Codec()
    return _default
