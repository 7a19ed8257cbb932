"""Ingest: Kafka records in, validated columns out (bad records become DLQ reasons).

Entry point: :func:`stream.ingest.decode.decode_batch` turns a batch of raw records
into :class:`stream.ingest.events.DecodedBatch` columns.  An
:class:`~stream.ingest.source.EventSource` delivers the records (Kafka:
:mod:`~stream.ingest.kafka_source`; tests: :mod:`~stream.ingest.memory`), and
:class:`~stream.ingest.decode_pool.DecodePool` decodes beside the consumer in a
second process.
"""
