"""Streaming ingestion: Kafka topics into the store (`stream`), files onto topics (`publish`)."""
