"""A faust-streaming app using the Backstop Avro codec on both sides (run by test_event_faust_broker.py).

Reads PositionUpdate records (value_serializer "backstop-PositionUpdate"), doubles the quantity
and writes them on with the same codec. Topics and broker come from FAUSTCODEC_* variables.
"""

import os

import faust

from pipelines.events.faust_codec import register

register()

app = faust.App(
    os.environ["FAUSTCODEC_APP_ID"],
    broker=os.environ["FAUSTCODEC_BROKER"],
    datadir=os.environ["FAUSTCODEC_DATADIR"],
    store="memory://",
    topic_replication_factor=1,
    topic_partitions=2,
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
)
source = app.topic(os.environ["FAUSTCODEC_SOURCE"], key_type=bytes, key_serializer="raw",
                   value_serializer="backstop-PositionUpdate")
sink = app.topic(os.environ["FAUSTCODEC_SINK"], key_type=bytes, key_serializer="raw",
                 value_serializer="backstop-PositionUpdate")


@app.agent(source)
async def double(stream):
    async for key, value in stream.items():
        await sink.send(key=key, value=dict(value, quantity=value["quantity"] * 2))


if __name__ == "__main__":
    app.main()
