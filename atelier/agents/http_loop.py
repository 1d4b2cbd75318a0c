"""One asyncio event loop per process, on a daemon thread, that carries every agent's HTTP requests.

Why a loop and not a thread per request: at 32-64 requests in flight, a thread pool's GIL
handoffs and the per-request CPU of a typed client held the requests in flight below the bound
(BENCHMARKS.md, "Agent calls at high concurrency"). One loop with aiohttp (C-accelerated HTTP
parsing, one connection pool) keeps the client's work per call small, and the graph's nodes stay
synchronous: they hand a coroutine to `run` and wait for its result.

    run(coroutine) -> its result     from any thread but the loop's own
    session() -> aiohttp.ClientSession   inside the loop only

Ctrl-C while waiting cancels the coroutine (its requests are abandoned, nothing is recorded) and
re-raises. A forked child gets a loop of its own on first use, and so does a `run` after the
loop was stopped at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import ssl
import threading
import urllib.parse
import urllib.request
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp
import certifi

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_session: aiohttp.ClientSession | None = None
# A forked child's copies of its parent's loop and session, kept from the garbage collector:
# closing them would close sockets (and unregister them from an epoll) the parent still uses.
_orphans: list = []


def _after_fork_in_child() -> None:
    global _lock, _loop, _thread, _session
    _lock = threading.Lock()  # another thread may have held it at the fork
    if _loop is not None:
        _orphans.append((_loop, _session))
    _loop = _thread = _session = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _event_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread, _session
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():  # first use, or stopped at exit
            _loop, _session = asyncio.new_event_loop(), None
            _thread = threading.Thread(target=_loop.run_forever, name="atelier-agents-http", daemon=True)
            _thread.start()
        return _loop


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on the agents' loop and return its result (or raise its exception).

    Raises RuntimeError when called from the loop's own thread (it would wait on itself)."""
    loop = _event_loop()
    if threading.current_thread() is _thread:
        coroutine.close()
        raise RuntimeError("http_loop.run() called from inside the agents' event loop; await the coroutine instead")
    future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    try:
        return future.result()
    except BaseException:  # KeyboardInterrupt or SystemExit while waiting: stop the requests too
        future.cancel()
        raise


def session() -> aiohttp.ClientSession:
    """The process's HTTP session (one connection pool for every endpoint). Call inside the loop.

    No limit on connections: the per-endpoint semaphores (atelier.agents.endpoints) bound what is
    in flight, and keep-alive connections are reused across batches and roles. Proxies: see
    `proxy_for` (the session's own `trust_env` would read the environment and ~/.netrc again on
    every request, a third of the client's CPU per call)."""
    global _session
    if _session is None or _session.closed:
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=ssl_context()))
    return _session


def ssl_context() -> ssl.SSLContext:
    """TLS verification against the system's CAs (SSL_CERT_FILE / SSL_CERT_DIR honoured) and
    certifi's bundle, which OpenAI's own clients use: an API endpoint verifies on a machine whose
    system store is empty as well as behind a proxy whose CA only the system store holds."""
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=certifi.where())
    return context


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url`: HTTP_PROXY / HTTPS_PROXY by its scheme (else an
    http:// ALL_PROXY), unless NO_PROXY covers its host, as OpenAI's own clients honour them. Read
    once per backend."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxies = urllib.request.getproxies()
    every = proxies.get("all", "")
    return proxies.get(parts.scheme) or (every if every.startswith("http") else None)  # aiohttp speaks no SOCKS


def _close() -> None:
    """At exit: close the session's connections (no 'Unclosed client session' warnings) and stop."""
    loop, held = _loop, _session
    if loop is None or not loop.is_running():
        return
    if held is not None and not held.closed:
        try:
            asyncio.run_coroutine_threadsafe(held.close(), loop).result(timeout=2)
        except Exception:  # a loop wedged at exit must not hang the interpreter
            pass
    loop.call_soon_threadsafe(loop.stop)


atexit.register(_close)
