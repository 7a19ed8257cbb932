"""The judge reads a reported series' expected value and worst callback share in place
(models.sequential.SlotView): the same numbers as a detector copy of that slot."""

from __future__ import annotations

import numpy as np
import orjson

from models.sequential import CallbackBank, SeqBank, SlotView, slot_view
from stream.config import Config
from stream.ingest.events import Source
from stream.pipeline import Pipeline
from stream.sim.simulate import Incident, SimConfig, simulate


def test_slot_view_reads_what_a_detector_copy_reads() -> None:
    sim = SimConfig(
        seed=5,
        duration_s=600,
        rate=40,
        merchants=30,
        daily=False,
        incidents=[Incident("callback_loss", 300, 120, provider="wechatpay")],
    )
    values = [orjson.dumps(e, option=orjson.OPT_SERIALIZE_NUMPY) for e in simulate(sim)]
    pipeline = Pipeline(Config())
    pipeline.process(values, [Source("t", 0, i) for i in range(len(values))])
    compared = 0
    for rule in pipeline.state.rules:
        bank = getattr(rule, "bank", None)
        if not isinstance(bank, (SeqBank, CallbackBank)):
            continue
        inner = bank.banks["missing"] if isinstance(bank, CallbackBank) else bank
        for slot in np.flatnonzero(inner.n).tolist():
            view, copy = slot_view(bank, slot), bank.detector(slot)
            assert isinstance(view, SlotView)
            same = np.array([view.expected(), copy.expected({})])
            assert same[0] == same[1] or np.isnan(same).all()
            assert view.worst({}) == copy.worst({})
            compared += 1
    assert compared > 500
    # A slot the bank has not grown to is the detector copy, fresh.
    seq = [
        b
        for b in (getattr(r, "bank", None) for r in pipeline.state.rules)
        if isinstance(b, SeqBank)
    ]
    assert not isinstance(slot_view(seq[0], seq[0].capacity + 5), SlotView)
