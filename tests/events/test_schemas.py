"""Schemas parse with the official avro package; every record round-trips through the codec."""

from __future__ import annotations

import io
import json
import math

import avro.io
import avro.schema
import fastavro
import pytest

from pipelines.events.codec import HEADER_SIZE, Codec, parse_header
from pipelines.events.registry import EmbeddedRegistry, read_manifest
from pipelines.events.schemas import NAMESPACE, SCHEMAS_DIR, default_schemas
from tests.kit.records import NOW_MS, RECORDS, sample

ISSUE_RECORDS = {"InstrumentDefinition", "IndexPrice", "MarkPrice", "VolatilityUpdate", "OrderBookDepth",
                 "OraclePrice", "PositionUpdate", "CollateralUpdate", "Breach", "Action", "ExecutionReport",
                 "DeadLetter"}


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(EmbeddedRegistry())


def test_every_schema_parses_with_official_avro_and_follows_conventions():
    files = sorted(SCHEMAS_DIR.glob("*.avsc"))
    names = set()
    for path in files:
        parsed = avro.schema.parse(path.read_text())
        assert parsed.namespace == NAMESPACE
        names.add(parsed.name)
    assert ISSUE_RECORDS <= names
    assert default_schemas().lint() == []
    assert set(RECORDS) == names  # a sample for every record


def test_every_schema_has_an_id_in_the_manifest():
    assert EmbeddedRegistry().unlocked() == []


def test_manifest_ids_are_unique_and_stable():
    entries = read_manifest(SCHEMAS_DIR / "registry.json")
    ids = [e.schema_id for e in entries]
    assert len(ids) == len(set(ids)) and ids == sorted(ids)
    registry = EmbeddedRegistry()
    again = EmbeddedRegistry()
    for name in RECORDS:
        assert registry.id_for(name) == again.id_for(name) == registry.id_for(f"{NAMESPACE}.{name}")
    # ids pinned by the committed manifest: a renumbering would break every message already written
    assert registry.id_for("PositionUpdate") == 11 and registry.writer_schema(1).name == "Action"
    assert registry.id_for("Action") == 17  # Action v2 (underlying); v1 keeps id 1
    assert registry.id_for("MarkPrice") == 18  # MarkPrice v3 (largest_holder_share); v1, v2 keep 8, 15


@pytest.mark.parametrize("record", RECORDS)
def test_round_trip_fastavro_codec(codec: Codec, record: str):
    datum = sample(record)
    data = codec.encode(record, datum)
    assert data[0] == 0 and parse_header(data) == codec.registry.id_for(record)
    decoded = codec.decode(data, record)
    assert decoded.record == record and decoded.value == datum


@pytest.mark.parametrize("record", RECORDS)
def test_round_trip_official_avro_reads_and_writes_the_same_bytes(codec: Codec, record: str):
    schema = default_schemas()[record]
    datum = sample(record)
    data = codec.encode(record, datum)
    # official reader decodes our body
    reader = avro.io.DatumReader(schema.avro)
    value = reader.read(avro.io.BinaryDecoder(io.BytesIO(data[HEADER_SIZE:])))
    assert value == datum
    # official writer produces bytes our codec decodes
    buf = io.BytesIO()
    avro.io.DatumWriter(schema.avro).write(datum, avro.io.BinaryEncoder(buf))
    assert codec.decode(data[:HEADER_SIZE] + buf.getvalue(), record).value == datum


def test_batch_helpers(codec: Codec):
    data = [sample("IndexPrice", price=60000.0 + i, event_time_ms=NOW_MS + i) for i in range(100)]
    framed = codec.encode_many("IndexPrice", data)
    assert [d.value for d in codec.decode_many(framed, "IndexPrice")] == data
    assert framed[3] == codec.encode("IndexPrice", data[3])


def test_key_is_the_documented_field(codec: Codec):
    assert codec.key("PositionUpdate", sample("PositionUpdate")) == b"acct-1"
    assert codec.key("MarkPrice", sample("MarkPrice")) == b"BTC-27DEC26-60000-C"
    assert codec.key("IndexPrice", sample("IndexPrice")) == b"BTC"
    for schema in default_schemas():
        assert schema.json["backstop.key"] in {f["name"] for f in schema.json["fields"]}


def test_nan_survives_the_wire_so_validation_can_see_it(codec: Codec):
    value = codec.decode(codec.encode("IndexPrice", sample("IndexPrice", price=math.nan))).value
    assert math.isnan(value["price"])


def test_older_writer_version_decodes_into_the_current_shape(tmp_path):
    """A message written with a previous version (older id) is resolved against today's schema."""
    from pipelines.events.registry import lock
    from pipelines.events.schemas import SchemaSet

    old = json.loads((SCHEMAS_DIR / "IndexPrice.avsc").read_text())
    (tmp_path / "IndexPrice.avsc").write_text(json.dumps(old))
    lock(SchemaSet.load(tmp_path), tmp_path / "registry.json")
    old_codec = Codec(EmbeddedRegistry(SchemaSet.load(tmp_path), tmp_path / "registry.json"))
    written = old_codec.encode("IndexPrice", sample("IndexPrice"))

    new = dict(old, fields=old["fields"] + [{"name": "source", "type": "string", "default": "deribit",
                                               "doc": "Where the index comes from."}])
    (tmp_path / "IndexPrice.avsc").write_text(json.dumps(new))
    added = lock(SchemaSet.load(tmp_path), tmp_path / "registry.json")
    assert [(e.schema_id, e.version) for e in added] == [(2, 2)]
    new_codec = Codec(EmbeddedRegistry(SchemaSet.load(tmp_path), tmp_path / "registry.json"))
    assert new_codec.schema_id("IndexPrice") == 2
    assert new_codec.decode(written).value == dict(sample("IndexPrice"), source="deribit")
    # and the new bytes carry the new id
    assert parse_header(new_codec.encode("IndexPrice", dict(sample("IndexPrice"), source="x"))) == 2
    # a doc-only edit keeps the fingerprint, so no new id
    (tmp_path / "IndexPrice.avsc").write_text(json.dumps(dict(new, doc="reworded")))
    assert lock(SchemaSet.load(tmp_path), tmp_path / "registry.json") == []


def test_fastavro_parsed_form_matches_file():
    for schema in default_schemas():
        assert fastavro.schema.to_parsing_canonical_form(schema.parsed)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_floats = st.floats(allow_nan=False)
_text = st.text(max_size=30)


@settings(max_examples=200, deadline=None)
@given(account=_text, quantity=_floats, price=_floats, seq=st.integers(-2**63, 2**63 - 1),
       t=st.integers(-2**63, 2**63 - 1))
def test_property_position_round_trip(account, quantity, price, seq, t):
    codec = Codec(EmbeddedRegistry())
    datum = sample("PositionUpdate", account=account, quantity=quantity, average_price=price, sequence=seq,
                   event_time_ms=t)
    assert codec.decode(codec.encode("PositionUpdate", datum), "PositionUpdate").value == datum


@settings(max_examples=100, deadline=None)
@given(details=st.dictionaries(_text, _text, max_size=5),
       triggers=st.lists(st.tuples(_text, st.integers(-1, 2**31 - 1), st.integers(-1, 2**63 - 1),
                                   st.none() | _text), max_size=5))
def test_property_breach_round_trip(details, triggers):
    codec = Codec(EmbeddedRegistry())
    datum = sample("Breach", details=details, triggers=[{"topic": a, "partition": b, "offset": c, "event_id": d}
                                                        for a, b, c, d in triggers])
    assert codec.decode(codec.encode("Breach", datum), "Breach").value == datum
