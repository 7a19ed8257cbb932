"""Judge: a closed window's features go to the detectors of every rule.

Entry point: :func:`stream.judge.catalog.build_rules` makes the rules a configuration
asks for; each rule's ``judge`` turns a :class:`~stream.judge.features.JudgedWindow`
into judgements.

- :mod:`~stream.judge.features`: the window's features, every series at once,
  computed once into a :class:`~stream.judge.features.JudgedWindow` for every rule;
- :mod:`~stream.judge.catalog`: :func:`~stream.judge.catalog.build_rules` makes the
  rules a configuration asks for, from a table of rule specs;
- :mod:`~stream.judge.rules`: a rule's ``judge`` scores its series and turns the
  anomalous ones (and those with an open episode) into
  :class:`~stream.judge.judgement.Judgement` objects;
- :mod:`~stream.judge.describe` writes their one-line summaries and
  :mod:`~stream.judge.hints` the root-cause hints beneath a roll-up series.
"""
