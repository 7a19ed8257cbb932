"""A commit the group refuses (a rebalance, or a restarted broker that forgot the member)
does not stop the worker: offsets of partitions it still owns are committed with the next
commit, those it lost are left to the next owner's replay.  The refusal is injected with
a consumer stand-in, since a real broker does not refuse on cue; the broker restart that
found it is tests/test_broker_restart_durable.py."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from stream.config import KafkaConfig
from stream.ingest.kafka_source import KafkaEventSource

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


class RefusingOnce:
    """What the source calls on its consumer: commit (refused the first time) and assignment."""

    def __init__(self, owned: set[TopicPartition]) -> None:
        self.owned = owned
        self.refused = 0
        self.committed: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not self.refused:
            self.refused += 1
            raise CommitFailedError("generation changed")
        self.committed.append(dict(offsets))

    def assignment(self) -> set[TopicPartition]:
        return self.owned


async def test_a_refused_commit_is_retried_for_owned_partitions_and_never_raised() -> None:
    source = KafkaEventSource(KafkaConfig(bootstrap_servers="127.0.0.1:1"))
    consumer: Any = RefusingOnce(owned={P0})  # P1 moved to another worker meanwhile
    source.consumer = consumer
    source.commit_soon({P0: 10, P1: 7})
    await source._committer  # type: ignore[misc]  # the refused commit, no error raised
    assert consumer.refused == 1 and consumer.committed == []
    await source.flush_commits()  # what the worker does before it stops: P0 again
    assert consumer.committed == [{P0: 10}]
    source.commit_soon({P0: 20})
    await source.flush_commits()
    assert consumer.committed == [{P0: 10}, {P0: 20}]
