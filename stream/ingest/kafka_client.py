"""Starting aiokafka clients and creating topics, with one error for an unreachable broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError


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
    bootstrap: str, topics: Iterable[str], partitions: int = 1, timeout_s: float = 15.0
) -> None:
    """Create the topics that do not exist yet (existing ones are left alone)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await start_client(admin, bootstrap, timeout_s=timeout_s)
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(t, partitions, 1) for t in dict.fromkeys(topics) if t not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
    finally:
        await admin.close()
