"""Static SLO rules from the config: warning and critical levels on a feature or ratio."""

from __future__ import annotations

import orjson
import pytest

from stream.alerting.record import AlertRecord
from stream.config import ConfigError, config_from_dict
from stream.ingest.events import SourceColumns
from stream.pipeline import Pipeline
from tests.traffic import OUTAGE, T0, traffic

SLO = {
    "rule": "success_slo",
    "feature": "success",
    "per": "volume",
    "warning": 0.99,
    "critical": 0.9,
    "levels": [["provider"]],
}


def run(cfg: dict) -> list[AlertRecord]:
    pipeline = Pipeline(config_from_dict(cfg))
    values: list[bytes | None] = [orjson.dumps(e) for e in traffic()]
    out = pipeline.process(
        values, SourceColumns(["t"] * len(values), [0] * len(values), range(len(values)))
    )
    return out.alerts + pipeline.flush().alerts


def test_success_rate_slo_pages_critical_for_the_outage_only() -> None:
    alerts = [a for a in run({"detectors": {"slos": [SLO]}}) if a.rule == "success_slo"]
    assert [(a.status, a.series, a.severity) for a in alerts] == [
        ("firing", {"provider": "alipay"}, "critical"),
        ("resolved", {"provider": "alipay"}, "critical"),
    ]
    assert alerts[0].started_at == T0 + OUTAGE[0]
    assert "success/volume" in alerts[0].summary and alerts[0].signal == "slo"


@pytest.mark.parametrize(
    ("slo", "message"),
    [
        ({**SLO, "feature": "sucess"}, r"detectors\.slos\[0\]\.feature: unknown feature 'sucess'"),
        ({**SLO, "critical": 0.99}, r"detectors\.slos\[0\]: warning and critical must differ"),
        ({**SLO, "rule": ""}, r"detectors\.slos\[0\]: 'rule' and 'feature' are required"),
        ({**SLO, "rule": "latency"}, r"two enabled rules share a rule name"),
    ],
)
def test_bad_slo_config_names_the_key(slo: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"detectors": {"slos": [slo]}})
