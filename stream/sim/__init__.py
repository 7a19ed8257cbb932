"""Simulation: realistic payment traffic with incidents, a producer, the local broker, the demo.

Entry point: :func:`stream.sim.simulate.simulate` (events) and
:func:`stream.sim.demo.run_demo` (``paywatch demo``).
"""
