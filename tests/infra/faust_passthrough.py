"""A minimal faust-streaming app: one agent reads a topic and writes every value, tagged, to another.

Run as a worker by tests/infra/test_kafka_roundtrip.py to prove faust-streaming (aiokafka) talks
to the pinned broker. Topics and broker come from PASSTHROUGH_* environment variables.
"""

import os

import faust

app = faust.App(
    os.environ["PASSTHROUGH_APP_ID"],
    broker=os.environ["PASSTHROUGH_BROKER"],
    datadir=os.environ["PASSTHROUGH_DATADIR"],
    store="memory://",
    topic_replication_factor=1,
    topic_partitions=2,
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
)
source = app.topic(os.environ["PASSTHROUGH_SOURCE"], key_type=bytes, value_type=bytes,
                   key_serializer="raw", value_serializer="raw")
sink = app.topic(os.environ["PASSTHROUGH_SINK"], key_type=bytes, value_type=bytes,
                 key_serializer="raw", value_serializer="raw")


@app.agent(source)
async def tag(stream):
    async for key, value in stream.items():
        await sink.send(key=key, value=b"seen:" + value)


if __name__ == "__main__":
    app.main()
