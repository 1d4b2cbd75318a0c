"""One concurrency bound per endpoint, shared by every role and thread that talks to it.

The bound lives here, not in a backend, because two roles (say judge and critic) may share one
vLLM server: each role's own bound alone would let twice the bound through. Every request runs on
the agents' one event loop (atelier.agents.http_loop), so an asyncio semaphore per endpoint sees
them all, and only that loop's thread touches this table: it needs no lock.
"""

from __future__ import annotations

import asyncio

_slots: dict[tuple[asyncio.AbstractEventLoop, str, int], asyncio.BoundedSemaphore] = {}


def endpoint_slots(base_url: str, limit: int) -> asyncio.BoundedSemaphore:
    """The semaphore of `base_url` on the running loop (call inside it). The config makes roles on
    one URL agree on `limit`; it is part of the key only so that a process trying several limits
    (tests, benchmarks) gets each."""
    key = (asyncio.get_running_loop(), base_url.rstrip("/"), limit)
    if key not in _slots:
        _slots[key] = asyncio.BoundedSemaphore(limit)
    return _slots[key]
