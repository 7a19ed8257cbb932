"""Starting aiokafka clients and creating topics, with one error for an unreachable broker,
and the connection settings (security included) every client paywatch creates shares."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from stream.config import ConfigError, KafkaConfig, check_kafka_security

_log = logging.getLogger("paywatch.kafka")
#: Seconds between progress lines of a long :func:`read_topic_to_end`.
READ_PROGRESS_S = 10.0

Security = Mapping[str, Any]  # aiokafka keyword arguments: security_protocol, sasl_*, ssl_context


def security_kwargs(cfg: KafkaConfig) -> dict[str, Any]:
    """The aiokafka keyword arguments of ``kafka.security_protocol`` and its settings.

    Checked first (a bad combination is a ``ConfigError`` naming the key); SSL gets an
    ``ssl_context`` from the CA, certificate and key files (aiokafka takes no file names).

    >>> security_kwargs(KafkaConfig())
    {'security_protocol': 'PLAINTEXT'}
    >>> cfg = KafkaConfig(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
    ...                   sasl_plain_username="u", sasl_plain_password="p")
    >>> sorted(security_kwargs(cfg).items())  # doctest: +NORMALIZE_WHITESPACE
    [('sasl_mechanism', 'SCRAM-SHA-512'), ('sasl_plain_password', 'p'),
     ('sasl_plain_username', 'u'), ('security_protocol', 'SASL_PLAINTEXT')]
    """
    check_kafka_security(cfg)
    protocol = cfg.security_protocol
    out: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        out["sasl_mechanism"] = cfg.sasl_mechanism
        out["sasl_plain_username"] = cfg.sasl_plain_username
        out["sasl_plain_password"] = cfg.sasl_plain_password
    if protocol in ("SSL", "SASL_SSL"):
        out["ssl_context"] = _ssl_context(cfg)
    return out


def _ssl_context(cfg: KafkaConfig) -> ssl.SSLContext:
    """aiokafka's context from the files; a file that is not what it should be is a
    ``ConfigError`` naming its key."""
    try:
        ctx = create_ssl_context(cafile=cfg.ssl_cafile or None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"kafka.ssl_cafile: cannot use {cfg.ssl_cafile}: {exc}") from None
    if cfg.ssl_certfile:
        try:
            ctx.load_cert_chain(cfg.ssl_certfile, cfg.ssl_keyfile or None)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"kafka.ssl_certfile: cannot use {cfg.ssl_certfile}"
                f"{' with ' + cfg.ssl_keyfile if cfg.ssl_keyfile else ''}: {exc}"
            ) from None
    return ctx


def client_kwargs(cfg: KafkaConfig) -> dict[str, Any]:
    """``bootstrap_servers`` and the security settings: what every client is built with."""
    return {"bootstrap_servers": cfg.bootstrap_servers, **security_kwargs(cfg)}


class KafkaUnavailable(RuntimeError):
    """Kafka could not be reached; the message says where paywatch looked."""


def _unreachable(bootstrap: str, what: str = "") -> KafkaUnavailable:
    return KafkaUnavailable(
        f"cannot reach Kafka at {bootstrap}{what}; check kafka.bootstrap_servers "
        "(or start a local one with `paywatch broker`)"
    )


async def start_client(
    client: Any, bootstrap: str, *, what: str = "", timeout_s: float = 30.0
) -> None:
    """Start an aiokafka client; an unreachable broker becomes one `KafkaUnavailable`."""
    try:
        await asyncio.wait_for(client.start(), timeout_s)
    except (TimeoutError, KafkaConnectionError, OSError):
        with contextlib.suppress(Exception):
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        raise _unreachable(bootstrap, what) from None


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int = 1,
    timeout_s: float = 15.0,
    *,
    security: Security | None = None,
) -> None:
    """Create the topics that do not exist yet (existing ones are left alone);
    ``security``: :func:`security_kwargs` of the config."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=10000, **(security or {})
    )
    await start_client(admin, bootstrap, timeout_s=timeout_s)
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(t, partitions, 1) for t in dict.fromkeys(topics) if t not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
    finally:
        await admin.close()


async def follow(
    consumer: Any, poll_ms: int, log: logging.Logger, what: str,
    handle: Callable[[dict[Any, list[Any]]], None],
) -> None:  # fmt: skip
    """Read ``consumer`` until cancelled, handing each poll's records (by partition) to
    ``handle``; a failed read is logged and retried, since the client reconnects by itself."""
    while True:
        try:
            got = await consumer.getmany(timeout_ms=poll_ms)
        except asyncio.CancelledError:
            raise
        except KafkaError as exc:
            log.warning("%s read failed, retrying: %s", what, exc)
            await asyncio.sleep(1.0)
            continue
        handle(got)


async def read_topic_to_end(
    cfg: KafkaConfig, topic: str, take: Callable[[Any], None], *, what: str = "", **overrides: Any
) -> None:
    """Every record of ``topic``, from its beginning to its end as it stands, to ``take``
    (partition by partition, each in order); nothing when the topic does not exist.
    ``overrides``: more consumer settings (e.g. ``max_partition_fetch_bytes``).  A long
    read logs its progress every ``READ_PROGRESS_S``."""
    consumer = AIOKafkaConsumer(
        **client_kwargs(cfg),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        request_timeout_ms=cfg.request_timeout_ms,
        **overrides,
    )
    await start_client(consumer, cfg.bootstrap_servers, what=what)
    try:
        await consumer.topics()
        ids = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(ids)]
        if not tps:
            return
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if ends.get(tp)}
        total, read = sum(ends.values()), 0
        loop = asyncio.get_running_loop()
        report = loop.time() + READ_PROGRESS_S
        while todo:
            got = await consumer.getmany(*todo, timeout_ms=500)
            for records in got.values():
                read += len(records)
                for r in records:
                    take(r)
            if loop.time() >= report:
                report = loop.time() + READ_PROGRESS_S
                _log.info("reading %s: %d of about %d records", topic, read, total)
            for tp in list(todo):
                # highwater() is what the last fetch answer said (end_offsets can be
                # short on some brokers when producers batch).
                hw = consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    todo.discard(tp)
    finally:
        await consumer.stop()
