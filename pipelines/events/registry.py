"""Schema ids: an embedded registry built from ``schemas/``, or a Confluent-compatible one over REST.

Both answer the two questions the codec asks:

* ``id_for(record)``: the id under which the working-tree schema of ``record`` is written;
* ``writer_schema(id)``: the schema a message carrying ``id`` was written with (any version).

**Embedded** (no URL configured): ids come from the committed manifest ``schemas/registry.json``.
Each entry is one version of one record (id, record, version, fingerprint of the Parsing
Canonical Form, full schema JSON). Ids are assigned once, in order, and never reused or
renumbered, so every process -- and every replay file -- agrees on them, and data written with an
older version can still be decoded: its writer schema stays in the manifest. A schema edited in
the working tree has no id until ``backstop schemas lock`` adds a new version to the manifest
(``backstop schemas check`` reports it); a doc-only edit keeps its fingerprint and its id.

**Remote** (``[schema_registry] url`` / ``$BACKSTOP_SCHEMA_REGISTRY_URL``): confluent-kafka's
``SchemaRegistryClient``. Subjects follow the RecordNameStrategy -- the subject is the record's
full name, e.g. ``backstop.events.PositionUpdate`` -- so one record type has one id sequence
whatever topic it travels on (replay topics, test topics). Schemas are registered on first use
(registration is idempotent in the registry) and ids resolved through the client's cache.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import fastavro

from pipelines.config import redact
from pipelines.errors import UserError
from pipelines.events.schemas import SCHEMAS_DIR, SchemaSet, default_schemas

MANIFEST_NAME = "registry.json"


class UnknownSchemaId(LookupError):
    """No schema with this id is known to the registry (the message cannot be decoded)."""


class RegistryUnavailable(RuntimeError):
    """The remote registry could not be asked (network, auth, 5xx): not the message's fault."""


@dataclasses.dataclass(frozen=True)
class WriterSchema:
    """A schema that data may have been written with."""

    schema_id: int
    fullname: str
    name: str
    parsed: Any  # fastavro parsed schema
    json: Any


def _writer(schema_id: int, schema_json: Any) -> WriterSchema:
    name = schema_json["name"]
    fullname = name if "." in name else f"{schema_json.get('namespace', '')}.{name}".lstrip(".")
    return WriterSchema(schema_id, fullname, fullname.rsplit(".", 1)[-1],
                        fastavro.parse_schema(schema_json, named_schemas={}), schema_json)


class Registry(abc.ABC):
    """What the codec needs from a schema registry."""

    schemas: SchemaSet

    @abc.abstractmethod
    def id_for(self, record: str) -> int:
        """Id of the current schema of ``record`` (short or full name)."""

    @abc.abstractmethod
    def writer_schema(self, schema_id: int) -> WriterSchema:
        """The schema stored under ``schema_id``; ``UnknownSchemaId`` if there is none."""


# --------------------------------------------------------------------------------------------
# embedded


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    schema_id: int
    record: str  # full name
    version: int
    fingerprint: str
    schema: Any

    def to_json(self) -> dict[str, Any]:
        return {"id": self.schema_id, "record": self.record, "version": self.version,
                "fingerprint": self.fingerprint, "schema": self.schema}


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    path = Path(path)
    if not path.exists():
        return []
    try:
        raw = json.loads(path.read_text())
        return [ManifestEntry(int(e["id"]), e["record"], int(e["version"]), e["fingerprint"], e["schema"])
                for e in raw["schemas"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a valid schema manifest: {exc}") from None


def write_manifest(path: str | Path, entries: Iterable[ManifestEntry]) -> None:
    body = {
        "doc": ("Schema ids of the embedded registry. Append-only: written by `backstop schemas lock`, "
                "never edited by hand."),
        "schemas": [e.to_json() for e in sorted(entries, key=lambda e: e.schema_id)],
    }
    Path(path).write_text(json.dumps(body, indent=1, sort_keys=False) + "\n")


def lock(schemas: SchemaSet, manifest_path: str | Path) -> list[ManifestEntry]:
    """Give every schema whose fingerprint is not in the manifest a new id and version; returns them."""
    entries = read_manifest(manifest_path)
    known = {(e.record, e.fingerprint) for e in entries}
    next_id = max((e.schema_id for e in entries), default=0) + 1
    added = []
    for schema in sorted(schemas, key=lambda s: s.fullname):
        if (schema.fullname, schema.fingerprint) in known:
            continue
        version = max((e.version for e in entries if e.record == schema.fullname), default=0) + 1
        entry = ManifestEntry(next_id, schema.fullname, version, schema.fingerprint, schema.json)
        entries.append(entry)
        added.append(entry)
        next_id += 1
    if added:
        write_manifest(manifest_path, entries)
    return added


class EmbeddedRegistry(Registry):
    """Stable ids from the committed manifest next to the schemas."""

    def __init__(self, schemas: SchemaSet | None = None, manifest: str | Path | None = None) -> None:
        self.schemas = schemas or default_schemas()
        self.manifest_path = Path(manifest) if manifest else SCHEMAS_DIR / MANIFEST_NAME
        self.entries = read_manifest(self.manifest_path)
        self._by_id = {e.schema_id: e for e in self.entries}
        self._writers: dict[int, WriterSchema] = {}
        self._current: dict[str, int] = {}
        by_fp = {(e.record, e.fingerprint): e.schema_id for e in self.entries}
        for schema in self.schemas:
            schema_id = by_fp.get((schema.fullname, schema.fingerprint))
            if schema_id is not None:
                self._current[schema.name] = self._current[schema.fullname] = schema_id

    def unlocked(self) -> list[str]:
        """Records whose working-tree schema has no id in the manifest yet."""
        return sorted(s.name for s in self.schemas if s.name not in self._current)

    def id_for(self, record: str) -> int:
        try:
            return self._current[record]
        except KeyError:
            if record in self.schemas:
                raise UserError(f"schema {record} has no id in {self.manifest_path} (changed or new): "
                                "run `backstop schemas lock`") from None
            raise KeyError(f"unknown record {record!r}") from None

    def writer_schema(self, schema_id: int) -> WriterSchema:
        writer = self._writers.get(schema_id)
        if writer is None:
            entry = self._by_id.get(schema_id)
            if entry is None:
                raise UnknownSchemaId(schema_id)
            writer = self._writers[schema_id] = _writer(schema_id, entry.schema)
        return writer

    def known(self) -> dict[int, Any]:
        """Every schema in the manifest by id (embedded in replay files)."""
        return {e.schema_id: e.schema for e in self.entries}


# --------------------------------------------------------------------------------------------
# remote


class RemoteRegistry(Registry):
    """A Confluent-compatible registry through confluent-kafka's ``SchemaRegistryClient``."""

    def __init__(self, url: str, schemas: SchemaSet | None = None, client_conf: dict[str, Any] | None = None,
                 client: Any = None) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.url = url
        self._shown = redact(url)  # messages never carry a password from the URL
        self.schemas = schemas or default_schemas()
        self.client = client or SchemaRegistryClient.new_client({"url": url, **(client_conf or {})})  # mock:// too
        self._lock = threading.Lock()
        self._current: dict[str, int] = {}
        self._writers: dict[int, WriterSchema] = {}

    @staticmethod
    def subject(fullname: str) -> str:
        """RecordNameStrategy: the subject is the record's full name."""
        return fullname

    def id_for(self, record: str) -> int:
        schema_id = self._current.get(record)
        if schema_id is not None:
            return schema_id
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        schema = self.schemas[record]
        try:
            schema_id = self.client.register_schema(self.subject(schema.fullname), Schema(schema.text, "AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 409:
                raise UserError(f"registry {self._shown} refused {schema.fullname}: incompatible with the registered "
                                f"version ({exc.error_message})") from None
            raise RegistryUnavailable(f"registry {self._shown}: {exc}") from exc
        except Exception as exc:  # network errors come in many types
            raise RegistryUnavailable(f"registry {self._shown}: {exc}") from exc
        with self._lock:
            self._current[schema.name] = self._current[schema.fullname] = schema_id
        return schema_id

    def writer_schema(self, schema_id: int) -> WriterSchema:
        writer = self._writers.get(schema_id)
        if writer is not None:
            return writer
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            registered = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise UnknownSchemaId(schema_id) from None
            raise RegistryUnavailable(f"registry {self._shown}: {exc}") from exc
        except Exception as exc:
            raise RegistryUnavailable(f"registry {self._shown}: {exc}") from exc
        if registered.schema_type not in (None, "AVRO"):
            raise UnknownSchemaId(schema_id)
        writer = _writer(schema_id, json.loads(registered.schema_str))
        with self._lock:
            self._writers[schema_id] = writer
        return writer


def open_registry(url: str | None = None, schemas: SchemaSet | None = None, **kwargs: Any) -> Registry:
    """The remote registry when ``url`` is set, else the embedded one.

    ``url=None`` reads ``settings.schema_registry.url`` from ``load_settings()``.
    """
    if url is None:
        from pipelines.config import load_settings

        url = load_settings().schema_registry.url
    if url:
        return RemoteRegistry(url, schemas, **kwargs)
    return EmbeddedRegistry(schemas, **kwargs)
