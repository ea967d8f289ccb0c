"""Event schemas, the one Avro codec, schema ids, validation, replay files and dead letters.

See docs/schemas.md. Entry points: ``codec.Codec`` / ``codec.default_codec()``,
``registry.open_registry()``, ``validation.Validator``, ``deadletter.ValidatingConsumer``,
``files.write_replay`` / ``read_replay``.
"""
