"""river models by dotted path from the YAML: validated at load, judging provider vectors."""

from __future__ import annotations

import pytest

from models.river_plug import DriftDetector
from stream.config import ConfigError, config_from_dict
from stream.judge.catalog import build_rules
from stream.judge.rules import DetectorRule


def mv(**kw: object) -> dict[str, object]:
    return {"detectors": {"multivariate": {"enabled": True, "levels": [["provider"]], **kw}}}


def test_an_unknown_model_path_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"detectors\.multivariate\.model: .*NoSuchModel"):
        config_from_dict(mv(model="river.anomaly.NoSuchModel"))
    with pytest.raises(ConfigError, match=r"detectors\.multivariate\.model: .*river model"):
        config_from_dict(mv(model="os.system"))


def test_bad_parameters_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"detectors\.multivariate\.model: .*n_treez"):
        config_from_dict(mv(model="river.anomaly.HalfSpaceTrees", params={"n_treez": 3}))


def test_a_drift_detector_needs_a_feature() -> None:
    with pytest.raises(ConfigError, match="name the feature"):
        config_from_dict(mv(model="river.drift.ADWIN"))


def test_the_named_model_is_built_with_its_parameters_per_series() -> None:
    cfg = config_from_dict(
        mv(model="river.anomaly.HalfSpaceTrees", params={"n_trees": 3, "seed": 1})
    )
    (rule,) = [r for r in build_rules(cfg) if r.name == "multivariate"]
    assert isinstance(rule, DetectorRule) and rule.levels == {("provider",)}
    det = rule.make()
    hst = det.model["HalfSpaceTrees"]  # type: ignore[attr-defined]
    assert hst.n_trees == 3 and hst.seed == 1


def test_a_drift_detector_scores_one_when_its_feature_shifts() -> None:
    cfg = config_from_dict(
        mv(
            model="river.drift.PageHinkley",
            params={"threshold": 1.0},
            feature="system_error_rate",
            min_windows=5,
        )
    )
    (rule,) = [r for r in build_rules(cfg) if r.name == "multivariate"]
    det = rule.make()  # type: ignore[attr-defined]
    assert isinstance(det, DriftDetector)
    calm = {"volume": 1000.0, "system_errors": 2.0}
    scores = [det.score_learn_one(calm) for _ in range(200)]
    assert max(scores) == 0.0
    bad = {"volume": 1000.0, "system_errors": 300.0}
    assert max(det.score_learn_one(bad) for _ in range(30)) == 1.0
