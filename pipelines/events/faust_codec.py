"""The Avro codec for Faust: the same ``Codec`` (and bytes) as every confluent-kafka client.

``register()`` registers, in faust's codec registry:

* ``"backstop"``: decodes any framed record to a dict (``value_serializer="backstop"``); encodes a
  ``(record_name, datum)`` pair or a dict carrying ``"__record__"``;
* ``"backstop-<Record>"`` for every record, e.g. ``"backstop-PositionUpdate"``: encodes dicts (or
  faust ``Record`` representations, whose extra ``__faust`` key is ignored) as that record and
  rejects other record types when decoding.

Decoding errors raise ``DecodeError`` (a ``ValueError``); in Faust they surface as the usual
``ValueDecodeError`` and the agent skips the event; workers that must dead-letter use
``deadletter.ValidatingConsumer`` or decode raw bytes (``value_serializer="raw"``) themselves.
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from pipelines.events.codec import Codec, default_codec

NAME = "backstop"


class AvroCodec(codecs.Codec):
    """A faust codec over ``pipelines.events.codec.Codec``; ``record`` fixes the record type."""

    def __init__(self, record: str | None = None, codec: Codec | None = None, **kwargs: Any) -> None:
        super().__init__(record=record, codec=codec, **kwargs)
        self.record = record
        self._codec = codec

    @property
    def codec(self) -> Codec:
        if self._codec is None:
            self._codec = default_codec()
        return self._codec

    def _dumps(self, obj: Any) -> bytes:
        record = self.record
        if record is None:
            if isinstance(obj, tuple) and len(obj) == 2:
                record, obj = obj
            elif isinstance(obj, dict) and "__record__" in obj:
                record = obj["__record__"]
            else:
                raise TypeError("the generic 'backstop' codec needs (record_name, datum) or a dict with '__record__'")
        return self.codec.encode(record, obj)

    def _loads(self, s: bytes) -> Any:
        return self.codec.decode(s, self.record).value


def register(codec: Codec | None = None) -> list[str]:
    """Register the generic and per-record codecs with faust; returns the names registered."""
    codecs.register(NAME, AvroCodec(None, codec))
    names = [NAME]
    schemas = (codec or default_codec()).schemas if codec else None
    for record in (schemas.names() if schemas else _record_names()):
        codecs.register(f"{NAME}-{record}", AvroCodec(record, codec))
        names.append(f"{NAME}-{record}")
    return names


def _record_names() -> list[str]:
    from pipelines.events.schemas import default_schemas

    return default_schemas().names()
