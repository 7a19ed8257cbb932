"""What the worker does when the consumer group moves partitions (and at start-up).

On revocation it finishes every batch it has read, checkpoints the state and
commits, so the next owner starts exactly where this one stopped.  On assignment
it restores the checkpoint of the assigned partitions (see
:mod:`stream.live.state_store`), tells the pipeline which partitions hold the
stream's clock, and resumes reading — from the checkpoint's offsets when one was
restored, else from the committed offsets.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiokafka import TopicPartition

from stream.clock import Clock
from stream.live.state_store import Checkpointer
from stream.pipeline import Pipeline

if TYPE_CHECKING:
    from stream.live.worker import ConsumeLoop

log = logging.getLogger("paywatch.rebalance")


class PartitionHandover:
    """The worker's :class:`~stream.ingest.source.Rebalance` handler."""

    def __init__(
        self, pipeline: Pipeline, checkpointer: Checkpointer | None, clock: Clock, topic: str
    ) -> None:
        self.pipeline = pipeline
        self.checkpointer = checkpointer
        self.clock = clock
        self.topic = topic
        self.loop: ConsumeLoop | None = None  # set once the consume loop exists
        self.assignment: set[int] = set()
        self.rebalances = 0

    async def revoked(self, partitions: set[int]) -> None:
        loop = self.loop
        if not partitions or loop is None:
            return
        await loop.pause()  # every batch read so far is finished and published
        try:
            if self.checkpointer is not None:
                await self.checkpointer.checkpoint(loop.done)
            await loop.source.flush_commits()
        except Exception as exc:  # the next owner replays from the last commit
            log.warning("revoking partitions %s: %s", sorted(partitions), exc)

    async def assigned(self, partitions: set[int]) -> dict[int, int]:
        loop = self.loop
        try:
            if loop is not None:
                await loop.pause()  # the state is replaced below: no batch may be half done
            seeks: dict[int, int] = {}
            if self.checkpointer is not None:
                seeks = await self.checkpointer.restore(partitions)
            self.pipeline.assign(partitions, self.clock.now_ms())
            self.assignment = set(partitions)
            self.rebalances += 1
            if loop is not None:
                done = {tp: o for tp, o in loop.done.items() if tp.partition in partitions}
                done.update({TopicPartition(self.topic, p): o for p, o in seeks.items()})
                loop.done = done
            log.info("assigned partitions %s of %s", sorted(partitions), self.topic)
            return seeks
        finally:
            if loop is not None:
                loop.resume()
