"""Small asyncio helpers every stage shares."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has stopped; its cancellation is not
    an error of the caller's.

    >>> async def main() -> bool:
    ...     t = asyncio.ensure_future(asyncio.sleep(3600))
    ...     await cancel_and_wait(t)
    ...     return t.cancelled()
    >>> asyncio.run(main())
    True
    """
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
