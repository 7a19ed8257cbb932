"""Kafka security settings: checked with errors naming the key, and passed to every client
paywatch makes as aiokafka's keyword arguments (no SASL broker is at hand: the kwargs and
the clients built from them are what is checked)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stream.config import ConfigError, config_from_dict
from stream.ingest.kafka_client import client_kwargs, security_kwargs
from stream.ingest.kafka_source import KafkaEventSource
from stream.live.control_reader import ControlReader
from stream.live.publisher import KafkaPublisher


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key (also usable as a CA file)."""
    d = tmp_path_factory.mktemp("pem")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=paywatch-test"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def kafka(env: dict[str, str] | None = None, **settings: Any) -> Any:
    return config_from_dict({"kafka": settings}, env=env or {}).kafka


def kafka_of(settings: dict[str, Any]) -> Any:
    return config_from_dict({"kafka": settings}, env={}).kafka


def test_plaintext_is_the_default() -> None:
    assert client_kwargs(kafka()) == {
        "bootstrap_servers": "localhost:9092",
        "security_protocol": "PLAINTEXT",
    }


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_ssl_with_the_password_from_the_environment(
    mechanism: str, pem: tuple[Path, Path]
) -> None:
    cfg = kafka(
        {"KAFKA_PASSWORD": "s3cret"},
        security_protocol="SASL_SSL",
        sasl_mechanism=mechanism,
        sasl_plain_username="paywatch",
        sasl_plain_password="${KAFKA_PASSWORD}",
        ssl_cafile=str(pem[0]),
    )
    kw = security_kwargs(cfg)
    ctx = kw.pop("ssl_context")
    assert kw == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "paywatch",
        "sasl_plain_password": "s3cret",
    }
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "paywatch-test"),),)]


def test_ssl_with_a_client_certificate(pem: tuple[Path, Path]) -> None:
    cert, key = pem
    cfg = kafka(security_protocol="SSL", ssl_certfile=str(cert), ssl_keyfile=str(key))
    kw = security_kwargs(cfg)
    assert kw["security_protocol"] == "SSL" and isinstance(kw["ssl_context"], ssl.SSLContext)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"security_protocol": "TLS"}, "kafka.security_protocol: must be one of PLAINTEXT, SSL, "
         "SASL_PLAINTEXT, SASL_SSL; got 'TLS'"),
        ({"security_protocol": "SASL_SSL"}, "kafka.sasl_mechanism: SASL_SSL needs one of PLAIN, "
         "SCRAM-SHA-256, SCRAM-SHA-512; got ''"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
          "sasl_plain_username": "u"},
         "kafka.sasl_plain_password: SASL_PLAINTEXT with SCRAM-SHA-256 needs it"),
        ({"sasl_plain_username": "u"}, "kafka.sasl_plain_username: set only with "
         "security_protocol SASL_PLAINTEXT or SASL_SSL (it is PLAINTEXT)"),
        ({"ssl_cafile": "/etc/hosts"}, "kafka.ssl_cafile: set only with security_protocol SSL "
         "or SASL_SSL (it is PLAINTEXT)"),
        ({"security_protocol": "SSL", "ssl_cafile": "/no/such/ca.pem"},
         "kafka.ssl_cafile: file not found: /no/such/ca.pem"),
        ({"security_protocol": "SSL", "ssl_keyfile": "/etc/hosts"},
         "kafka.ssl_keyfile: needs ssl_certfile (the certificate it belongs to)"),
    ],
)  # fmt: skip
def test_a_bad_combination_is_a_config_error_naming_the_key(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        kafka_of(settings)
    assert str(err.value) == message


def test_a_password_variable_that_is_not_set_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"kafka.sasl_plain_password: environment variable "):
        kafka(sasl_plain_password="${KAFKA_PASSWORD}")


def test_a_file_that_is_no_certificate_names_the_key(
    tmp_path: Path, pem: tuple[Path, Path]
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^kafka.ssl_cafile: cannot use .*junk.pem"):
        security_kwargs(kafka(security_protocol="SSL", ssl_cafile=str(junk)))
    with pytest.raises(ConfigError, match=r"^kafka.ssl_certfile: cannot use .*junk.pem"):
        security_kwargs(kafka(security_protocol="SSL", ssl_certfile=str(junk)))


async def test_every_worker_client_is_built_with_the_settings() -> None:
    cfg = kafka(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="paywatch",
        sasl_plain_password="pw",
    )
    clients = [
        KafkaEventSource(cfg).consumer._client,
        KafkaPublisher(cfg).producer.client,
        ControlReader(cfg, lambda raw, now: None).consumer._client,
    ]
    for client in clients:
        assert (client._security_protocol, client._sasl_mechanism) == (
            "SASL_PLAINTEXT",
            "SCRAM-SHA-512",
        )
        assert (client._sasl_plain_username, client._sasl_plain_password) == ("paywatch", "pw")
