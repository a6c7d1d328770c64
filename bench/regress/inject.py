"""Put a known amount of CPU work into one method, on the fly: how tests and calibration
make a regression that the guard must catch."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator


def burn(seconds: float) -> None:
    """Busy loop for `seconds` of this thread's CPU time (not a sleep: it must cost CPU)."""
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        x += 1


@contextlib.contextmanager
def inject_cpu_work(method: str, seconds_per_step: float) -> Iterator[None]:
    """Inside, every `observe` of `method` (once per training step, timed as its method stage)
    first burns `seconds_per_step` of CPU time."""
    from bench.registry import METHODS

    cls = METHODS.get(method)
    own = cls.__dict__.get("observe")
    inner = cls.observe

    def observe(self, batch, logits, losses):
        burn(seconds_per_step)
        return inner(self, batch, logits, losses)

    cls.observe = observe
    try:
        yield
    finally:
        if own is None:
            del cls.observe
        else:
            cls.observe = own


def per_step_seconds(row: dict, share: float) -> float:
    """CPU seconds per step that make a method's training `share` slower (0.1 = 10%),
    from a measured row: share of its CPU cost (training and search) per step."""
    return share * row["cost_seconds"] / max(1, row["total_steps"])


def per_step_seconds_now(suite, method: str, share: float) -> float:
    """As `per_step_seconds`, from one run of the method measured now: CPU seconds per unit
    of work vary with what else the machine runs, so a baseline's may be off by 20%."""
    from bench.regress.measure import measure

    return per_step_seconds(measure(suite, rounds=1, log=lambda *a: None, only={method})["methods"][method], share)
