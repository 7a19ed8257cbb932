"""Config: defaults work, mistakes name the key, secrets come from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "paywatch.yaml"
    p.write_text(text)
    return p


def test_no_file_gives_working_defaults() -> None:
    cfg = load_config(None)
    assert cfg.windows.size_s == 10 and cfg.kafka.events_topic == "payments.events"
    assert cfg.detectors.error_rate.min_volume > 1


def test_every_key_is_optional_and_overrides_apply(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "windows:\n  size_s: 30\nkafka:\n  group_id: g2\n"))
    assert cfg.windows.size_s == 30.0 and cfg.kafka.group_id == "g2"
    assert cfg.windows.allowed_lateness_s == 5.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("windows:\n  sise_s: 3\n", "windows.sise_s: unknown key"),
        ("windows:\n  size_s: ten\n", "windows.size_s: expected a number"),
        ("kafka:\n  max_batch: true\n", "kafka.max_batch: expected an integer"),
        (
            "detectors:\n  error_rate:\n    threshold: 5\n",
            "detectors.error_rate.threshold: must be between 0 and 1",
        ),
        (
            "windows:\n  levels: [[provider, country]]\n",
            "windows.levels[0]: unknown dimension 'country'",
        ),
        ("kafka: [1, 2]\n", "kafka: expected a mapping"),
        ("state:\n  checkpoint_every_s: 0\n", "state.checkpoint_every_s: must be > 0"),
        ("state:\n  checkpoint_every_s: soon\n", "state.checkpoint_every_s: expected a number"),
        ("state:\n  alert_checkpoint_gap_s: -1\n", "state.alert_checkpoint_gap_s: must be >= 0"),
        ("state:\n  chunk_bytes: 100\n", "state.chunk_bytes: must be between 1024 and"),
        ("state:\n  chunk_bytes: 1e12\n", "state.chunk_bytes: expected an integer"),
        ("state:\n  checkpoint: maybe\n", "state.checkpoint: expected"),
        ("state:\n  every_s: 5\n", "state.every_s: unknown key"),
        ("windows: {size_s: [\n", "not valid YAML at line"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(write(tmp_path, text))


def test_env_substitution_and_missing_variable(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "kafka:\n  bootstrap_servers: ${PW_TEST_BROKER:-localhost:1}\n  group_id: ${PW_G}\n",
    )
    cfg = load_config(p, env={"PW_G": "from-env"})
    assert cfg.kafka.bootstrap_servers == "localhost:1" and cfg.kafka.group_id == "from-env"
    with pytest.raises(ConfigError, match=r"kafka\.group_id: environment variable PW_G is not set"):
        load_config(p, env={})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
