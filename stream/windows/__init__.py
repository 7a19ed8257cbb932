"""Windows: event-time windows per series, counted with numpy and rolled up per level.

Entry point: :class:`stream.windows.state.WindowState` (``add_batch``, then
``close_ready`` or ``flush`` yields :class:`~stream.windows.state.ClosedWindow` objects).

Every event feeds every level it has the dimensions for (roll-ups): with the
default levels a ``provider_call`` counts for ``{provider}``,
``{provider, operation}`` and ``{provider, operation, merchant_id}``; a
``payment_notification`` for ``{provider}``, ``{provider, merchant_id}`` and
``{provider, signing_key_id}`` (so a new key failing verification stands out);
a ``metric`` for its own ``{metric}`` series (name plus sorted labels).

A batch goes through, in order:

- :mod:`~stream.windows.atoms`: events grouped into *atoms* (distinct combinations
  of every dimension the levels use) with one sort, and each atom's series id per
  level, from the :mod:`~stream.windows.registry` (dense integer ids per series);
- :mod:`~stream.windows.columns`: which counter columns each event counts in;
- :mod:`~stream.windows.rollup`: counts per (atom, pane) with ``np.bincount``,
  addressed to the atom's series at every level, so the work per event does not
  grow with the number of levels and Python loops run over new series only;
- :mod:`~stream.windows.callbacks`: created orders wait for their notification;
  a missing one is counted when its deadline passes;
- :mod:`~stream.windows.metric_stats`: count, sum, max and newest value of metric
  samples; :mod:`~stream.windows.histogram`: latency histograms;
- :mod:`~stream.windows.state`: the window state keeps the :mod:`~stream.windows.panes`
  and the watermark, and closes windows.
"""
