"""Judge: a closed window's features go to the detectors of every rule.

Entry point: :func:`stream.judge.rules.build_rules` makes the rules a configuration
asks for; each rule's ``judge`` turns a closed window into judgements.
"""
