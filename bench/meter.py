"""A pace meter for a shared CPU: a cell's train time read in units of one fixed training step.

On a small VM two cells train at once, and the host runs other machines beside this one. A cell's
whole pace then moves by 10-30% with whatever runs next to it: every stage at once, level for
seconds, shifting when the neighbour changes (seen in the sub-epoch probes of `quick`). Thread
CPU time does not remove that, and five seeds do not average it away.

So, now and then while a cell trains, the engine times one reference step (a forward and backward
of the cell's own model on a fixed batch, everything it changes put back, off the clock) and this
records it. The batch is the training batch, or a few samples of it where a step is costly (text:
bench/workload.py), so that every cell is read often enough to average its pace. Each stretch of
train time between two readings is divided by the mean of the two (the first reading comes with the
first step; after the last, its pace holds): `metered_steps` is the train time in reference steps.
Two cells of a setting share the reference step, so the ratio of their metered steps is a train speedup that the neighbour's pace cancels out
of. A reading is the faster of two back-to-back steps (a brief interruption only adds time); one is
taken when the clock has run `every` readings' worth since the last, so the meter costs about
2 / `every` of the train time, none of it on the clock.
"""
from __future__ import annotations

import math
from typing import Callable


class PaceMeter:
    def __init__(self, clock: Callable[[], float], every: float = 100.0):
        self.clock, self.every = clock, every
        self.readings: list[tuple[float, float]] = []  # (train seconds when read, seconds of one reference step)

    def _time(self, step: Callable[[], None]) -> float:
        best = math.inf
        for _ in range(2):
            t0 = self.clock()
            step()
            best = min(best, self.clock() - t0)
        return best

    def read(self, train_seconds: float, step: Callable[[], None]) -> None:
        self.readings.append((train_seconds, self._time(step)))

    def due(self, train_seconds: float) -> bool:
        if not self.readings:
            return True
        at, pace = self.readings[-1]
        return train_seconds - at >= self.every * pace

    def metered_steps(self, train_seconds: float) -> float:
        """`train_seconds` in reference steps: each stretch between two readings over the mean pace at its
        two ends, the stretch after the last at the last pace; nan without a reading."""
        r = [x for x in self.readings if x[1] > 0]
        if not r:
            return float("nan")
        between = sum((t1 - t0) / (0.5 * (p0 + p1)) for (t0, p0), (t1, p1) in zip(r, r[1:]))
        return between + max(0.0, train_seconds - r[-1][0]) / r[-1][1] + r[0][0] / r[0][1]

    def mean_pace(self) -> float:
        return sum(p for _, p in self.readings) / len(self.readings) if self.readings else float("nan")

    def state_dict(self) -> list:
        return list(self.readings)

    def load_state_dict(self, readings: list) -> None:
        self.readings = [tuple(r) for r in readings]
