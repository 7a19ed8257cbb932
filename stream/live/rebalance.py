"""What the worker does when the consumer group moves partitions (and at start-up).

On revocation it finishes every batch it has read, checkpoints the state and
commits, so the next owner starts exactly where this one stopped.  On assignment
it restores the checkpoint of the assigned partitions (see
:mod:`stream.live.state_store`), tells the pipeline which partitions hold the
stream's clock, and resumes reading — from the checkpoint's offsets when one was
restored, else from the committed offsets.  State that starts cold (nothing restored)
first closes the alert episodes it left open (:mod:`stream.live.orphans`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiokafka import TopicPartition

from stream.clock import Clock
from stream.live.orphans import OrphanCloser
from stream.live.state_store import Checkpointer, TaskCheckpointer
from stream.live.tasks import Task, TaskSet
from stream.pipeline import Pipeline

if TYPE_CHECKING:
    from stream.live.worker import ConsumeLoop

log = logging.getLogger("paywatch.rebalance")


async def _hand_back(
    loop: ConsumeLoop, checkpointer: Checkpointer | TaskCheckpointer | None, what: str
) -> None:
    """Before partitions go: finish every batch read, checkpoint, commit.  A failure is
    logged: the next owner replays from the last commit."""
    await loop.pause()  # every batch read so far is finished and published
    try:
        if checkpointer is not None:
            await checkpointer.checkpoint(loop.done)
        await loop.source.flush_commits()
    except Exception as exc:
        log.warning("revoking %s: %s", what, exc)


class PartitionHandover:
    """The worker's :class:`~stream.ingest.source.Rebalance` handler."""

    def __init__(
        self,
        pipeline: Pipeline,
        checkpointer: Checkpointer | None,
        clock: Clock,
        topic: str,
        orphans: OrphanCloser | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.checkpointer = checkpointer
        self.clock = clock
        self.topic = topic
        self.orphans = orphans
        self.loop: ConsumeLoop | None = None  # set once the consume loop exists
        self.assignment: set[int] = set()
        self.rebalances = 0

    async def revoked(self, partitions: set[int]) -> None:
        if partitions and self.loop is not None:
            await _hand_back(self.loop, self.checkpointer, f"partitions {sorted(partitions)}")

    async def assigned(self, partitions: set[int]) -> dict[int, int]:
        loop = self.loop
        try:
            if loop is not None:
                await loop.pause()  # the state is replaced below: no batch may be half done
            seeks: dict[int, int] = {}
            if self.checkpointer is not None:
                seeks = await self.checkpointer.restore(partitions)
            if partitions and not self.rebalances:
                await self._close_left_open()
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

    async def _close_left_open(self) -> None:
        """At start-up without a checkpoint: the one pipeline holds every series (one
        worker only), so every episode its group left firing is closed."""
        cp = self.checkpointer
        if self.orphans is None or (cp is not None and cp.restored is not None):
            return
        reason = "checkpoints off" if cp is None else cp.cold
        await self.orphans.close(lambda rec: True, reason, f"the worker of {self.topic}")


class TaskHandover:
    """The rebalance handler of ``scale_out: tasks``: partitions of the events topic and of
    the repartition topic move one task at a time.

    On revocation (the eager protocol revokes everything) every batch read is finished,
    every task that changed is checkpointed and the offsets are committed, before the group
    goes on — so the next owner of a partition restores exactly where this worker stopped.
    On assignment, tasks still owned stay in memory (newer than any checkpoint), tasks that
    left are dropped and new ones are restored from their checkpoints (or start cold).
    """

    def __init__(
        self,
        tasks: TaskSet,
        checkpointer: TaskCheckpointer | None,
        clock: Clock,
        orphans: OrphanCloser | None = None,
    ) -> None:
        self.tasks = tasks
        self.checkpointer = checkpointer
        self.clock = clock
        self.orphans = orphans
        self.loop: ConsumeLoop | None = None
        self.assignment: set[TopicPartition] = set()
        self.rebalances = 0

    async def revoked_tps(self, tps: set[TopicPartition]) -> None:
        if tps and self.loop is not None:
            await _hand_back(self.loop, self.checkpointer, _names(tps))

    async def assigned_tps(self, tps: set[TopicPartition]) -> dict[TopicPartition, int]:
        loop = self.loop
        try:
            if loop is not None:
                await loop.pause()
            gone = self.tasks.keep_only(tps)
            new = {tp for tp in tps if tp not in self.tasks.tasks}
            seeks: dict[TopicPartition, int] = {}
            fresh = [self.tasks.new_task(tp) for tp in sorted(new)]
            if self.checkpointer is not None and new:
                fresh, seeks = await self.checkpointer.restore(new)
            await self._close_left_open([t for t in fresh if t.rollup and t.cold])
            now = self.clock.now_ms()
            for task in [*self.tasks.tasks.values(), *fresh]:
                self.tasks.start(task, now)
            self.assignment = set(tps)
            self.rebalances += 1
            if loop is not None:
                done = {tp: o for tp, o in loop.done.items() if tp in tps}
                done.update(seeks)
                loop.done = done
            log.info(
                "assigned %s (%d tasks restored or started, %d handed over)",
                _names(tps),
                len(fresh),
                len(gone),
            )
            return seeks
        finally:
            if loop is not None:
                loop.resume()

    async def _close_left_open(self, cold: list[Task]) -> None:
        """Roll-up tasks that start cold close the episodes of their series left firing."""
        if not cold or self.orphans is None:
            return
        parts = {t.tp.partition for t in cold}
        reason = "; ".join(sorted({t.cold for t in cold}))
        what = f"roll-up task {_names({t.tp for t in cold})}"
        rollup_of = self.tasks.rollup_of
        await self.orphans.close(lambda rec: rollup_of(rec.series) in parts, reason, what)


def _names(tps: set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "nothing"
