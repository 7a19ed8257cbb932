"""Windows: event-time windows per series, counted with numpy and rolled up per level.

Entry point: :class:`stream.windows.state.WindowState` (``add_batch`` then
``advance`` yields :class:`~stream.windows.state.ClosedWindow` objects).
"""
