"""Record input topics to Avro container files and replay them into Kafka or in-process."""
