"""Stage timing: CUDA events on a GPU (resolved at epoch ends and probes, never per step),
perf_counter on CPU.

Time is exclusive: each interval between two marks belongs to the stage that was
current, so nested stages never count twice. Inside `exclusive("search")` every
inner stage is charged to search.

CPU-time mode: inside `with thread_cpu_time():`, timers created on CPU read
`time.thread_time()`, the CPU seconds the calling thread consumed. With one torch
thread all of a cell's work runs in that thread, so time the process spends
descheduled (another process on the core) is not counted. The regression guard
uses it; wall time stays the default everywhere else.
"""
from __future__ import annotations

import contextlib
import time

import torch

# method: every hook call of the method (its selection, scoring and upkeep): the harness times it, never the author
STAGES = ("data", "method", "forward", "backward", "optimizer", "search", "evaluation")
NOT_TRAIN = ("search", "evaluation")  # train time excludes these; end-to-end includes them
HARNESS = "harness"  # checkpoints, logging, warm-up of new shapes: the harness's own cost, in neither time

_thread_clock = False  # set by `thread_cpu_time()`; read when a timer is created


@contextlib.contextmanager
def thread_cpu_time():
    """CPU timers created inside count the thread's CPU seconds instead of wall seconds."""
    global _thread_clock
    before, _thread_clock = _thread_clock, True
    try:
        yield
    finally:
        _thread_clock = before


def use_thread_clock() -> None:
    """From now on CPU timers in this process count thread CPU time (worker processes of a suite)."""
    global _thread_clock
    _thread_clock = True


class StageTimer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.thread_clock = _thread_clock and not self.cuda
        self.clock = time.thread_time if self.thread_clock else time.perf_counter
        self.totals = dict.fromkeys(STAGES + ("other", HARNESS), 0.0)
        self.current = "other"
        self._locked = 0
        self._pending: list[tuple[str, object]] = []  # (stage of the interval ending here, mark)
        self._last = self._now()

    def _now(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return self.clock()

    def _switch(self, stage: str) -> None:
        if stage == self.current:
            return
        mark = self._now()
        if self.cuda:
            self._pending.append((self.current, mark))
        else:
            self.totals[self.current] += mark - self._last
            self._last = mark
        self.current = stage

    @contextlib.contextmanager
    def stage(self, name: str):
        if self._locked:
            yield
            return
        prev = self.current
        self._switch(name)
        try:
            yield
        finally:
            self._switch(prev)

    @contextlib.contextmanager
    def exclusive(self, name: str):
        """Charge everything inside to `name`, whatever stages the code inside opens."""
        with self.stage(name):
            self._locked += 1
            try:
                yield
            finally:
                self._locked -= 1

    @contextlib.contextmanager
    def untimed(self):
        """Charge everything inside to the harness, even inside `exclusive` (warm-up of a new shape)."""
        prev, locked = self.current, self._locked
        self._locked = 0
        self._switch(HARNESS)
        self._locked = len(STAGES) + 1  # nothing inside may switch
        try:
            yield
        finally:
            self._locked = 0
            self._switch(prev)
            self._locked = locked

    @property
    def running(self) -> bool:
        """Whether time now lands on a stage that is counted (not the harness's own)."""
        return self.current != HARNESS

    def flush(self) -> None:
        """Resolve pending CUDA intervals (one synchronisation)."""
        if not self.cuda or not self._pending:
            return
        self._pending[-1][1].synchronize()
        prev = self._last
        for stage, ev in self._pending:
            self.totals[stage] += prev.elapsed_time(ev) / 1000.0
            prev = ev
        self._last = prev
        self._pending.clear()

    def start(self, totals: dict | None = None) -> None:
        """Start the clock now, from zero or from saved totals (a resumed run): setup and
        untimed warm-up steps before this call are not counted."""
        self.flush()
        self.totals = dict.fromkeys(self.totals, 0.0)
        self.totals.update(totals or {})
        self.current = "other"
        self._last = self._now()

    def train_seconds(self) -> float:
        self.flush()
        return sum(v for k, v in self.totals.items() if k not in NOT_TRAIN and k != HARNESS)

    def total_seconds(self) -> float:
        self.flush()
        return sum(v for k, v in self.totals.items() if k != HARNESS)

    def state_dict(self) -> dict:
        self.flush()
        return dict(self.totals)
