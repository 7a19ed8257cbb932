"""`paywatch config check`: every example config in the repository passes; the output is the
effective configuration (a loadable YAML file, defaults filled in, secrets masked) plus who
hears what; a broken config exits 2 with one line naming the key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.alerting.routes import Router
from stream.cli.config_check import alert_classes, reach
from stream.cli.main import main
from stream.config import Config, config_from_dict, config_to_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG_KEYS = {f.name for f in dataclasses.fields(Config)}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def _is_paywatch_config(data: Any) -> bool:
    return isinstance(data, dict) and bool(CONFIG_KEYS & set(data))


def example_configs() -> dict[str, str]:
    """Every paywatch config in the repository: YAML files, and docs' YAML blocks."""
    found: dict[str, str] = {}
    for path in sorted([*ROOT.rglob("*.yaml"), *ROOT.rglob("*.yml")]):
        rel = path.relative_to(ROOT)
        if rel.parts[0].startswith(".") or "node_modules" in rel.parts:
            continue
        text = path.read_text(encoding="utf-8")
        if _is_paywatch_config(yaml.safe_load(text)):
            found[str(rel)] = text
    for doc in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")]):
        blocks = re.findall(r"```ya?ml\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
        for i, block in enumerate(blocks):
            if _is_paywatch_config(yaml.safe_load(block)):
                found[f"{doc.relative_to(ROOT)}#yaml{i + 1}"] = block
    return found


EXAMPLES = example_configs()


def plausible(name: str) -> str:
    """A value of the form a secret or setting of this name has (Apprise validates them)."""
    upper = name.upper()
    if "SID" in upper:
        return "AC0123456789abcdef0123456789abcdef"
    if "PHONE" in upper or "MOBILE" in upper or "SMS_FROM" in upper:
        return "15551230000"
    if "BOOTSTRAP" in upper:
        return "kafka:9092"
    if upper.endswith("_USER"):
        return "ops"
    return "f0e1d2c3b4a5968778695a4b3c2d1e0f"


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["config", "check", "--config", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str, name: str = "paywatch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_examples_are_found() -> None:
    assert {"docker/paywatch.yaml", "docs/alerts.md#yaml1", "docs/config.md#yaml1"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_config_checks_ok(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = EXAMPLES[name]
    for var, default in _ENV_REF.findall(text):
        if not default:
            monkeypatch.setenv(var, plausible(var))
    # Files a deployment provides (TLS certificates and keys): present here as empty files.
    for file in set(re.findall(r"(/[\w./-]+\.(?:pem|crt|key))\b", text)):
        local = tmp_path / Path(file).name
        local.write_text("", encoding="utf-8")
        text = text.replace(file, str(local))
    code, out, err = check(write(tmp_path, text), capsys)
    assert (code, err) == (0, "")
    assert out.startswith("# paywatch config check: ") and ": OK\n" in out.splitlines()[0] + "\n"
    # The output is itself a valid config: the effective one.
    assert isinstance(config_from_dict(yaml.safe_load(out)), Config)


def test_effective_config_has_every_default_and_loads_back_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "windows: {size_s: 5}\n"
        "notify:\n  routes:\n    - name: tickets\n      receivers: [json://tickets.example.com/in]\n",
    )
    code, out, _ = check(path, capsys)
    assert code == 0
    printed = yaml.safe_load(out)
    assert printed["windows"]["allowed_lateness_s"] == 5.0  # a default the file leaves out
    assert printed["notify"]["routes"][0]["group_wait_s"] == 30.0  # route defaults too
    assert printed["notify"]["routes"][0]["continue"] is False
    original, again = load_config(path), config_from_dict(printed)
    assert again.notify_routes() == original.notify_routes()
    assert config_to_dict(again) | {"notify": None} == config_to_dict(original) | {"notify": None}
    assert again.notify.delivery == original.notify.delivery


def test_secrets_are_masked_everywhere_in_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = {
        "DT_SECRET": "SECdt0a1b2c3d4e5f6",
        "DT_TOKEN": "dt0token9f8e7d6c5b4a",
        "FS_SECRET": "fsSECq1w2e3r4t5y6",
        "SMTP_PASSWORD": "hunter22-smtp-pw",
        "TWILIO_TOKEN": "f0e1d2c3b4a5968778695a4b3c2d1e0f",
    }
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    path = write(
        tmp_path,
        """
notify:
  routes:
    - name: oncall
      receivers:
        - dingtalk://${DT_SECRET}@${DT_TOKEN}/
        - feishu://${FS_SECRET}@b7e1c2d3-feishu-token/
        - mailto://ops:${SMTP_PASSWORD}@smtp.example.com?to=oncall@example.com
        - twilio://AC0123456789abcdef0123456789abcdef:${TWILIO_TOKEN}@15551230000/15557654321
""",
    )
    code, out, _ = check(path, capsys)
    assert code == 0
    for value in [*secrets.values(), "b7e1c2d3-feishu-token"]:
        assert value not in out
    assert "dingtalk://****@****/" in out and "mailto://ops:****@smtp.example.com" in out


ROUTED = """
notify:
  routes:
    - name: alipay-oncall
      match: {provider: alipay, severity: critical}
      receivers: ["feishu://fsSECRET1234@tok-abc-123/"]
      fallback: sms
    - name: team
      match_re: {severity: critical|warning}
      receivers: ["json://team.example.com/hook"]
    - name: sms
      match: {rule: never}
      receivers: ["json://sms-gateway.example.com/send"]
      body_format: text
detectors:
  multivariate: {enabled: true}
"""


def _reach_block(out: str, head: str) -> list[str]:
    lines = [line.removeprefix("#").strip() for line in out.splitlines()]
    i = lines.index(head)
    block = []
    for line in lines[i + 1 :]:
        if not line.startswith("->"):
            break
        block.append(line)
    return block


def test_who_hears_what_follows_the_routes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = check(write(tmp_path, ROUTED), capsys)
    assert code == 0
    assert _reach_block(out, "system_error_rate critical") == [
        '-> alipay-oncall when provider="alipay": feishu://****@****/',
        '-> team when not provider="alipay": json://team.example.com/hook',
    ]
    assert _reach_block(out, "system_error_rate warning") == [
        "-> team: json://team.example.com/hook"
    ]
    # The informational multivariate rule alerts as info only: no route matches it.
    assert _reach_block(out, "multivariate info") == [
        "-> default: no receivers: alerts topic, console and history only"
    ]
    # Metric events are judged by default: an unusual value warns (a hard limit may page
    # critical, which this config routes like any other critical alert).
    assert _reach_block(out, "metric_anomaly warning") == ["-> team: json://team.example.com/hook"]
    assert "or by no alert at all): sms" in out


@pytest.mark.parametrize(
    "routes",
    [
        [],
        [{"name": "pager", "match": {"severity": "critical"}, "continue": True},
         {"name": "team", "match_re": {"severity": "critical|warning"}},
         {"name": "default"}],
        [{"name": "errors", "match_re": {"rule": "system_error_rate|config_errors"}},
         {"name": "rest", "match": {"signal": "latency"}, "escalate_to": "boss",
          "escalate_after_s": 60},
         {"name": "boss", "match": {"severity": "critical"}}],
    ],
)  # fmt: skip
def test_reach_agrees_with_the_dispatchers_router(routes: list[dict[str, Any]]) -> None:
    cfg = config_from_dict(
        {"notify": {"routes": routes}, "detectors": {"metrics": {"enabled": True}}}
    )
    parsed, _ = cfg.notify_routes()
    router = Router(parsed)
    for cls in alert_classes(cfg):
        expected = [r.name for r in router.routes_for(cls.labels)]
        assert [h.route.name for h in reach(parsed, cls)] == expected, cls
        assert all(h.when == "" for h in reach(parsed, cls))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("windows:\n  sise_s: 5\n", "windows.sise_s: unknown key"),
        ("detectors:\n  error_rate:\n    threshold: high\n", "detectors.error_rate.threshold"),
        ("notify:\n  routes:\n    - name: a\n      fallback: nowhere\n", "fallback names unknown"),
        (
            "notify:\n  routes:\n    - name: a\n      receivers: ['dingtalk://bad token!/']\n",
            "notify.routes[0].receivers[0]: not a URL Apprise can use",
        ),
        (
            "notify:\n  routes:\n    - name: a\n      receivers: ['wecombot://${NOT_SET_9Q}']\n",
            "notify.routes[0].receivers[0]: environment variable NOT_SET_9Q is not set",
        ),
        ("kafka: [\n", "not valid YAML at line"),
        ("alerts:\n  for_windows: 0\n", "alerts: for_windows"),
    ],
)
def test_a_broken_config_exits_2_naming_the_key(
    text: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = check(write(tmp_path, text), capsys)
    assert code == 2 and out == ""
    assert err.startswith("paywatch config: error: ") and named in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_without_a_file_the_built_in_defaults_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# paywatch config check: built-in defaults: OK")
    assert config_to_dict(config_from_dict(yaml.safe_load(out))) == config_to_dict(Config())
