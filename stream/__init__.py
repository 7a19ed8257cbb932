"""paywatch's data movement: Kafka I/O, decoding, windows, pipeline, alerts, notifications, CLI."""

__version__ = "0.1.0"
