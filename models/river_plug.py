"""Any river anomaly or drift model, named by dotted path with parameters, as a detector.

A configuration names the model (``river.anomaly.HalfSpaceTrees`` with
``{n_trees: 10, seed: 1}``, or ``river.drift.ADWIN``); :func:`check_river_model`
validates the name and the parameters when the configuration loads, and
:class:`RiverFactory` builds one detector per series:

- an anomaly model (``learn_one``/``score_one``) judges the window's normalised
  feature vector (:func:`models.multivariate.window_vector`) behind a min-max
  scaler, calibrated to [0, 1] by :class:`~models.multivariate.MultivariateDetector`;
- a drift detector (``update``/``drift_detected``) follows one feature of that
  vector and scores 1.0 in the window it reports a drift.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, cast

from models.base import Detector, Features
from models.multivariate import MultivariateDetector, window_vector

#: Features of :func:`window_vector` a drift detector can follow.
VECTOR_FEATURES = (
    "log_volume",
    "system_error_rate",
    "config_error_rate",
    "business_decline_rate",
    "timeout_rate",
    "log_p50",
    "log_p95",
    "log_p99",
    "missing_rate",
)


def resolve_river(path: str) -> tuple[type, str]:
    """The class a dotted path names and its kind (``anomaly`` or ``drift``).

    >>> resolve_river("river.drift.ADWIN")[1]
    'drift'
    >>> resolve_river("river.anomaly.NoSuchModel")
    Traceback (most recent call last):
    ...
    ValueError: 'river.anomaly.NoSuchModel': river.anomaly has no NoSuchModel
    """
    module_name, _, name = path.rpartition(".")
    if not module_name.startswith("river") or not name:
        raise ValueError(f"{path!r}: name a river model, e.g. river.anomaly.HalfSpaceTrees")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ValueError(f"{path!r}: no module {module_name}") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise ValueError(f"{path!r}: {module_name} has no {name}")
    if hasattr(cls, "score_one") and hasattr(cls, "learn_one"):
        return cls, "anomaly"
    if hasattr(cls, "update") and hasattr(cls, "drift_detected"):
        return cls, "drift"
    raise ValueError(f"{path!r}: not a river anomaly model or drift detector")


def check_river_model(path: str, params: dict[str, Any], feature: str = "") -> str:
    """Build the model once so a bad name or parameter fails at config load; its kind."""
    cls, kind = resolve_river(path)
    try:
        cls(**params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path} does not take these parameters: {exc}") from None
    if kind == "drift" and feature not in VECTOR_FEATURES:
        raise ValueError(
            f"{path} is a drift detector: name the feature it follows "
            f"(one of {', '.join(VECTOR_FEATURES)})"
        )
    return kind


class DriftDetector:
    """A river drift detector on one feature of the window vector; 1.0 when it drifts."""

    __slots__ = ("drifted", "feature", "min_windows", "model", "n")

    def __init__(self, model: Any, feature: str, min_windows: int = 30) -> None:
        self.model = model
        self.feature = feature
        self.min_windows = min_windows
        self.n = 0
        self.drifted = False

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for k, v in zip(self.__slots__, state, strict=True):
            setattr(self, k, v)

    @property
    def ready(self) -> bool:
        return self.n >= self.min_windows

    def score_one(self, x: Features) -> float:
        return 1.0 if self.drifted and self.ready else 0.0

    def learn_one(self, x: Features) -> DriftDetector:
        self.model.update(window_vector(x).get(self.feature, 0.0))
        self.drifted = bool(self.model.drift_detected)
        self.n += 1
        return self

    def score_learn_one(self, x: Features) -> float:
        self.learn_one(x)
        return self.score_one(x)


@dataclass(frozen=True)
class RiverFactory:
    """Builds the configured river model for one series (picklable, for checkpoints)."""

    path: str
    params: tuple[tuple[str, Any], ...]
    feature: str = ""
    min_windows: int = 500
    quantile: float = 0.999

    def __call__(self) -> Detector:
        cls, kind = resolve_river(self.path)
        model = cls(**dict(self.params))
        if kind == "drift":
            return DriftDetector(model, self.feature, self.min_windows)
        from river import preprocessing

        scaled = cast(Detector, preprocessing.MinMaxScaler() | model)
        return MultivariateDetector(scaled, quantile=self.quantile, min_windows=self.min_windows)
