"""Replay container files and the Faust codec use the same Codec and bytes."""

from __future__ import annotations

import avro.datafile
import avro.io
import pytest
from faust.serializers import codecs

from event_samples import NOW_MS, sample
from pipelines.events.codec import Codec, DecodeError
from pipelines.events.faust_codec import AvroCodec, register
from pipelines.events.files import read_replay, replay_record, schemas_in, write_replay
from pipelines.events.registry import EmbeddedRegistry


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(EmbeddedRegistry())


def test_replay_file_round_trip(tmp_path, codec: Codec):
    updates = [sample("PositionUpdate", sequence=i, event_time_ms=NOW_MS + i) for i in range(1000)]
    records = [replay_record("backstop.positions", codec.encode("PositionUpdate", u), key=codec.key("PositionUpdate", u),
                             partition=i % 3, offset=i, timestamp_ms=NOW_MS + i, event_time_ms=u["event_time_ms"])
               for i, u in enumerate(updates)]
    path = tmp_path / "positions.avro"
    assert write_replay(path, records, codec=codec) == 1000
    back = list(read_replay(path))
    assert back == records
    assert [codec.decode(r["value"]).value for r in back] == updates
    # self-describing: the writer schemas travel in the header
    embedded = schemas_in(path)
    assert embedded[codec.schema_id("PositionUpdate")]["name"] == "PositionUpdate"
    # and the official avro package reads the file too
    with open(path, "rb") as fo:
        official = list(avro.datafile.DataFileReader(fo, avro.io.DatumReader()))
    assert official == records


def test_faust_codec_round_trip(codec: Codec):
    names = register(codec)
    assert "backstop" in names and "backstop-PositionUpdate" in names
    datum = sample("PositionUpdate")
    per_record = codecs.get_codec("backstop-PositionUpdate")
    data = codecs.dumps("backstop-PositionUpdate", datum)
    assert data == codec.encode("PositionUpdate", datum)  # same bytes as confluent-kafka clients
    assert codecs.loads("backstop", data) == datum
    assert per_record.loads(data) == datum
    # faust Record representations carry an extra __faust key: ignored
    assert codec.decode(codecs.dumps("backstop-PositionUpdate", dict(datum, __faust={"ns": "x"}))).value == datum
    assert codecs.loads("backstop", codecs.dumps("backstop", ("IndexPrice", sample("IndexPrice")))) == sample("IndexPrice")
    with pytest.raises(DecodeError):
        codecs.loads("backstop-IndexPrice", data)
    # chaining and cloning keep the configuration
    assert isinstance(per_record.clone(), AvroCodec) and per_record.clone().record == "PositionUpdate"


def test_faust_record_model_through_the_codec(codec: Codec):
    import faust

    register(codec)

    class Position(faust.Record, serializer="backstop-PositionUpdate"):
        account: str
        instrument: str
        quantity: float
        average_price: float
        sequence: int
        event_time_ms: int

    p = Position(**sample("PositionUpdate"))
    data = p.dumps()
    assert codec.decode(data).value == sample("PositionUpdate")
    assert Position.loads(data, serializer="backstop-PositionUpdate") == p
