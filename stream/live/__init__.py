"""Live: the ``paywatch run`` worker (Kafka in, alerts out, wall clock, Prometheus).

Entry point: :func:`stream.live.worker.run_worker`.
"""
