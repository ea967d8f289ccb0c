"""The event schemas in ``schemas/*.avsc``: loaded once, validated with the official ``avro`` package.

Each file holds one self-contained record schema in namespace ``backstop.events``. The official
``avro`` parser is the judge of validity (and of compatibility, see ``evolution``); the hot path
uses fastavro's parsed form of the same JSON. Project conventions checked by ``lint``:

* every record and every field has a ``doc``;
* the record names its Kafka key field in ``"backstop.key"`` and that field exists and is a string;
* the record has ``event_time_ms`` of type ``long`` (UTC epoch milliseconds).

Field attributes ``"backstop.check"`` (``price``, ``positive``, ``nonnegative``, ``fraction``, ``quantity``,
``instrument``, ``instrument_name``, ``event_time``) tell ``validation`` what to check.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import avro.schema
import fastavro

from pipelines.errors import UserError

NAMESPACE = "backstop.events"
KEY_ATTR = "backstop.key"
CHECK_ATTR = "backstop.check"
FILE_ONLY_ATTR = "backstop.file_only"
EVENT_TIME_FIELD = "event_time_ms"
SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"


def canonical_form(schema: Mapping[str, Any] | str) -> str:
    """Avro Parsing Canonical Form (drops docs, defaults and custom attributes)."""
    schema_json = json.loads(schema) if isinstance(schema, str) else dict(schema)
    return fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(schema_json, named_schemas={}))


def fingerprint(schema: Mapping[str, Any] | str) -> str:
    """SHA-256 (hex) of the canonical form: equal for schemas that encode identically."""
    return hashlib.sha256(canonical_form(schema).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class EventSchema:
    """One record schema: its JSON, the official avro parse, and fastavro's parsed form."""

    name: str  # short record name, e.g. "PositionUpdate"
    fullname: str  # "backstop.events.PositionUpdate"
    json: Mapping[str, Any]
    text: str  # the file's text, as committed
    avro: avro.schema.RecordSchema
    parsed: Any  # fastavro parsed schema (hot path)
    key_field: str
    file_only: bool = False

    @functools.cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.json)

    def key_of(self, record: Mapping[str, Any]) -> str:
        """The Kafka key of a record of this type (value of its ``backstop.key`` field)."""
        return str(record[self.key_field])


def parse(text: str, source: str = "<schema>") -> EventSchema:
    """Parse one schema's JSON text with the official avro package and fastavro."""
    try:
        schema_json = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{source}: not valid JSON: {exc}") from None
    try:
        parsed_avro = avro.schema.parse(text)
    except (avro.errors.SchemaParseException, avro.errors.AvroException, TypeError, KeyError) as exc:
        raise UserError(f"{source}: not a valid Avro schema: {exc}") from None
    if not isinstance(parsed_avro, avro.schema.RecordSchema):
        raise UserError(f"{source}: top-level schema must be a record")
    return EventSchema(
        name=parsed_avro.name,
        fullname=parsed_avro.fullname,
        json=schema_json,
        text=text,
        avro=parsed_avro,
        parsed=fastavro.parse_schema(schema_json, named_schemas={}),
        key_field=str(schema_json.get(KEY_ATTR, "")),
        file_only=bool(schema_json.get(FILE_ONLY_ATTR, False)),
    )


def lint(schema: EventSchema, source: str = "") -> list[str]:
    """Convention problems of one schema (empty when it follows every project convention)."""
    where = source or schema.name
    problems: list[str] = []
    if schema.avro.namespace != NAMESPACE:
        problems.append(f"{where}: namespace must be {NAMESPACE}, not {schema.avro.namespace!r}")
    if not schema.json.get("doc"):
        problems.append(f"{where}: record {schema.name} has no doc")
    _lint_fields(schema.json, where, problems)
    fields = {f["name"]: f for f in schema.json.get("fields", [])}
    if not schema.key_field:
        problems.append(f"{where}: record {schema.name} has no {KEY_ATTR!r} attribute naming its Kafka key field")
    elif schema.key_field not in fields:
        problems.append(f"{where}: {KEY_ATTR} names {schema.key_field!r}, which is not a field")
    elif fields[schema.key_field]["type"] != "string":
        problems.append(f"{where}: key field {schema.key_field!r} must be a non-null string")
    if fields.get(EVENT_TIME_FIELD, {}).get("type") != "long":
        problems.append(f"{where}: record {schema.name} needs a `{EVENT_TIME_FIELD}` field of type long (UTC epoch ms)")
    return problems


def _lint_fields(record: Mapping[str, Any], where: str, problems: list[str]) -> None:
    for field in record.get("fields", []):
        if not field.get("doc"):
            problems.append(f"{where}: field {record['name']}.{field['name']} has no doc")
        for nested in _named_records(field["type"]):
            if not nested.get("doc"):
                problems.append(f"{where}: record {nested['name']} has no doc")
            _lint_fields(nested, where, problems)


def _named_records(type_: Any) -> Iterable[Mapping[str, Any]]:
    if isinstance(type_, list):
        for branch in type_:
            yield from _named_records(branch)
    elif isinstance(type_, dict):
        if type_.get("type") == "record":
            yield type_
        elif type_.get("type") == "array":
            yield from _named_records(type_["items"])
        elif type_.get("type") == "map":
            yield from _named_records(type_["values"])


class SchemaSet:
    """Every schema of a ``schemas/`` folder, by short and by full record name."""

    def __init__(self, schemas: Iterable[EventSchema], sources: Mapping[str, str] | None = None) -> None:
        self._by_name: dict[str, EventSchema] = {}
        self.sources: dict[str, str] = dict(sources or {})
        for schema in schemas:
            if schema.name in self._by_name:
                raise UserError(f"record {schema.name} is defined twice")
            self._by_name[schema.name] = schema
            self._by_name[schema.fullname] = schema

    @classmethod
    def load(cls, directory: str | Path | None = None) -> SchemaSet:
        directory = Path(directory) if directory else SCHEMAS_DIR
        files = sorted(directory.glob("*.avsc"))
        if not files:
            raise UserError(f"no *.avsc schemas in {directory}")
        schemas, sources = [], {}
        for path in files:
            schema = parse(path.read_text(), str(path))
            if path.stem != schema.name:
                raise UserError(f"{path}: file must be named after its record ({schema.name}.avsc)")
            schemas.append(schema)
            sources[schema.name] = str(path)
        return cls(schemas, sources)

    def __getitem__(self, name: str) -> EventSchema:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown record {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self):
        seen = set()
        for schema in self._by_name.values():
            if schema.name not in seen:
                seen.add(schema.name)
                yield schema

    def names(self) -> list[str]:
        return sorted(s.name for s in self)

    def lint(self) -> list[str]:
        return [p for s in self for p in lint(s, self.sources.get(s.name, s.name))]


@functools.cache
def default_schemas() -> SchemaSet:
    """The project's own ``schemas/`` folder, loaded once per process."""
    return SchemaSet.load(SCHEMAS_DIR)
