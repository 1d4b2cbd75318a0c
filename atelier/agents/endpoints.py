"""One concurrency bound per endpoint, shared by every role and thread that talks to it.

The bound lives here, not in a backend, because two roles (say judge and critic) may share one
vLLM server: each role's thread pool alone would let twice the bound through.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}


def endpoint_slots(base_url: str, limit: int) -> threading.BoundedSemaphore:
    """The semaphore of `base_url`. The config makes roles on one URL agree on `limit`; it is part
    of the key only so that a process trying several limits (tests, benchmarks) gets each."""
    key = (base_url.rstrip("/"), limit)
    with _lock:
        if key not in _slots:
            _slots[key] = threading.BoundedSemaphore(limit)
        return _slots[key]
