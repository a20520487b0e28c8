"""The event loop every `tracker` command runs its coroutines on.

uvloop (libuv) where it is installed: the plain-HTTP path is network-bound Python, and uvloop's C
transports cut the CPU of a whole `tracker check` pass by about a tenth (bench/throughput.py). Where it
is missing (Windows), asyncio's own loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Any:
    """A new event loop: uvloop's when available, else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(coro)` on a loop from `loop_factory`."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)
