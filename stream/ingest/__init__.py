"""Ingest: Kafka records in, validated columns out (bad records become DLQ reasons).

Entry point: :func:`stream.ingest.decode.decode_batch` turns a batch of raw records
into :class:`stream.ingest.events.DecodedBatch` columns; :class:`~stream.ingest.kafka.EventSource`
reads them from Kafka and :class:`~stream.ingest.decode_pool.DecodePool` decodes beside
the consumer in a second process.
"""
