"""Detectors of paywatch: they judge one series' windows; :mod:`stream` only moves data.

One detector family per module, river-style, each with its vectorised twin beside it
where there is one:

- :mod:`models.base`: the :class:`~models.base.Detector` protocol (river's
  ``learn_one`` / ``score_one``), optional capabilities, the window ``FEATURES``;
- :mod:`models.bank`: what a vectorised twin (a *bank*) is, and ``bank_for``;
- :mod:`models.error_rate` (+ ``ErrorRateBank``), :mod:`models.threshold`
  (+ ``ThresholdBank``), :mod:`models.latency` (+ ``LatencyBank``),
  :mod:`models.volume`, :mod:`models.callbacks`, :mod:`models.multivariate`,
  :mod:`models.metric` (univariate metric series);
- :mod:`models.combinators`: detectors made of detectors;
- :mod:`models.tails`: binomial tail probabilities; :mod:`models.nab`: NAB scoring.
"""
