"""tracker.loop: every command's coroutines run on uvloop where installed, else on asyncio's loop."""

import asyncio
import sys

import pytest

from tracker.loop import run


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not a dependency on Windows")
def test_runs_on_uvloop() -> None:
    assert run(_loop_module()).startswith("uvloop")


def test_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert run(_loop_module()).startswith("asyncio")


def test_returns_the_result_and_raises_the_error() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    assert run(asyncio.sleep(0, result=42)) == 42
    with pytest.raises(ValueError, match="boom"):
        run(fails())


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not a dependency on Windows")
def test_a_dramatiq_worker_runs_its_checks_on_the_same_loop() -> None:
    import logging

    from tracker.queue import _AsyncIO, _event_loop_thread

    thread = _event_loop_thread(logging.getLogger("test"), _AsyncIO.INTERRUPT_CHECK_S)
    thread.start(timeout=5.0)
    try:
        assert thread.run_coroutine(_loop_module()).startswith("uvloop")
        assert thread.interrupt_check_ival == _AsyncIO.INTERRUPT_CHECK_S
    finally:
        thread.stop()
