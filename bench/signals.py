"""Ctrl-C and SIGTERM stop the CLI between two store calls, never inside one.

An exception raised inside an SQLAlchemy session can leave this process holding SQLite's write
lock; the run then cannot be marked killed ("database is locked", seen in CI) and the stop ends
in a traceback. So a signal that lands while MLflow or SQLAlchemy code is on the stack is held
until the store call is over: raised where bench.tracking's store call returns (`raise_held`),
or by the next look, every RETRY_S, that finds no store code on the stack. A second Ctrl-C or
SIGTERM from outside stops at once (a store that hangs never traps the user).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

from bench.errors import Terminated

STORE_MODULES = ("mlflow", "sqlalchemy", "sqlite3", "alembic")
RETRY_S = 0.05
_state = {"on": False, "held": None, "retrying": False}


def _in_store(frame) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").split(".")[0] in STORE_MODULES:
            return True
        frame = frame.f_back
    return False


def _retry(signum: int) -> None:
    if _state["on"]:
        _state["retrying"] = True
        os.kill(os.getpid(), signum)


def _handler(signum, frame):
    retrying, _state["retrying"] = _state["retrying"], False
    if retrying and _state["held"] is None:
        return  # raised already where its store call returned
    if _in_store(frame) and (retrying or _state["held"] is None):
        _state["held"] = signum
        timer = threading.Timer(RETRY_S, _retry, (signum,))
        timer.daemon = True
        timer.start()
        return
    _state["held"] = None
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def install() -> dict:
    """From now on SIGTERM raises Terminated and Ctrl-C KeyboardInterrupt, never inside a store
    call (main thread only). Returns the handlers it replaced."""
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGTERM, signal.SIGINT)}
    _state.update(on=True, held=None, retrying=False)
    return previous


def raise_held() -> None:
    """Raise a held stop now (called where a store call has returned)."""
    signum = _state["held"]
    if signum is not None and not _in_store(sys._getframe(1)):
        _state["held"] = None
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextmanager
def stop_between_store_calls():
    """`install()` for the length of the block, then the previous handlers again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = install()
    try:
        yield
    finally:
        _state["on"] = False
        for s, h in previous.items():
            signal.signal(s, h)
