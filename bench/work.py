"""Work accounting, in one place: what a run did (counts, per-epoch batch plan), what each
kind of pass costs on this hardware (measured in seconds), and the fractions of uniform's
work the report and the controls read.

Units. Every pass is weighted by its measured per-sample time on the run's own hardware and
model: a training forward f and its backward b (train mode, batch of the cell's size), an
eval-mode scoring forward s (no grad), an early exit p_k through the first k stages. Uniform
does E x N x (f + b). A method's train work is F f + B b + S s + sum_k P_k p_k over that;
search passes (trials) count as training passes. The ideal speedup is 1 / train work.

The batch plan is the list of training batch sizes of each epoch, run-length coded as
"128x140,80x1;..." (epochs separated by ';'). The selection control replays it with random
samples; that is how it copies a method's per-epoch backward counts and step structure.
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F


@dataclass
class Counts:
    """Realized per-sample work. Selection passes are counted, never hidden."""

    forwards: int = 0  # training forwards
    backwards: int = 0
    selection_forwards: int = 0  # eval-mode scoring passes (ctx.score)
    partial_forwards: int = 0  # early exits through the first k stages
    search_forwards: int = 0  # inside trials and ctx.search()
    search_backwards: int = 0
    steps: int = 0
    skipped: int = 0  # single-sample batches not trained: train-mode batch norm needs two samples
    exits: dict[int, int] = field(default_factory=dict)  # partial forwards per exit depth k

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "exits"}

    def since(self, before: "Counts") -> "Counts":
        d = {k: v - getattr(before, k) for k, v in self.as_dict().items()}
        return Counts(**d, exits={k: n - before.exits.get(k, 0) for k, n in self.exits.items()})

    def copy(self) -> "Counts":
        return Counts(**self.as_dict(), exits=dict(self.exits))

    def state(self) -> dict:
        return {**self.as_dict(), "exits": dict(self.exits)}

    @classmethod
    def from_state(cls, d: dict) -> "Counts":
        return cls(**{k: v for k, v in d.items() if k != "exits"},
                   exits={int(k): v for k, v in (d.get("exits") or {}).items()})


# -- the batch plan


def encode_plan(epochs: list[list[int]]) -> str:
    """Batch sizes per epoch -> '128x140,80x1;...'."""
    out = []
    for sizes in epochs:
        runs: list[list[int]] = []
        for s in sizes:
            if runs and runs[-1][0] == s:
                runs[-1][1] += 1
            else:
                runs.append([s, 1])
        out.append(",".join(f"{s}x{n}" for s, n in runs))
    return ";".join(out)


def decode_plan(plan: str) -> list[list[int]]:
    """'128x140,80x1;...' -> batch sizes per epoch (an epoch with no step is '')."""
    epochs = []
    for ep in plan.split(";"):
        sizes: list[int] = []
        for part in filter(None, ep.split(",")):
            s, n = part.split("x")
            sizes += [int(s)] * int(n)
        epochs.append(sizes)
    return epochs


def check_plan(plan: str) -> str | None:
    """Why `plan` is not a batch plan, or None."""
    try:
        epochs = decode_plan(plan)
    except ValueError:
        return f"plan {plan[:40]!r} is not of the form '128x140,80x1;...' (batch size x count, epochs split by ';')"
    if any(s < 1 for ep in epochs for s in ep):
        return "plan has a batch size below 1"
    return None


# -- what passes cost


@dataclass(frozen=True)
class PassCosts:
    """Seconds per sample of each kind of pass, measured on the run's hardware."""

    forward: float  # training forward (train mode, grad on)
    backward: float
    score: float  # eval-mode forward, no grad
    partial: dict[int, float] = field(default_factory=dict)  # early exit through k stages, no grad

    def metrics(self) -> dict[str, float]:
        out = {"cost_forward_s": self.forward, "cost_backward_s": self.backward, "cost_score_s": self.score}
        out.update({f"cost_partial{k}_s": v for k, v in self.partial.items()})
        return out

    @classmethod
    def from_metrics(cls, m: dict) -> "PassCosts | None":
        if "cost_forward_s" not in m:
            return None
        partial = {int(k[len("cost_partial"):-2]): v for k, v in m.items()
                   if k.startswith("cost_partial") and k.endswith("_s")}
        return cls(m["cost_forward_s"], m["cost_backward_s"], m["cost_score_s"], partial)


REPEATS = 2


def measure_costs(model: torch.nn.Module, x, mask, y, exits=(), amp=None, clock=None) -> PassCosts:
    """Per-sample seconds of a training forward, its backward, an eval-mode forward and each early
    exit, on a copy of the model (its weights, statistics and gradients stay untouched), with the
    global RNG put back (dropout must not move the seeded stream)."""
    net = copy.deepcopy(model)
    cuda = x.is_cuda
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    amp = amp or torch.autocast("cpu", enabled=False)
    rng = torch.get_rng_state()
    n = len(y)
    timer = clock or time.perf_counter

    def seconds(fn) -> float:
        fn()
        sync()
        out = []
        for _ in range(REPEATS):
            t0 = timer()
            fn()
            sync()
            out.append(timer() - t0)
        return statistics.median(out) / n

    def fwd():
        net.train()
        with amp:
            return F.cross_entropy(net(x, mask).float(), y)

    def fwd_bwd():
        net.zero_grad(set_to_none=True)
        fwd().backward()

    try:
        forward = seconds(fwd)
        backward = max(0.0, seconds(fwd_bwd) - forward)

        @torch.no_grad()
        def score():
            net.eval()
            with amp:
                net(x, mask)

        score_s = seconds(score)
        partial = {}
        for k in sorted(exits):
            @torch.no_grad()
            def early(k=k):
                net.eval()
                with amp:
                    net.early_exit(x, mask, k)

            partial[k] = seconds(early)
    finally:
        torch.set_rng_state(rng)
    return PassCosts(forward, backward, score_s, partial)


# -- fractions of uniform's work


def train_seconds_equiv(c: Counts, costs: PassCosts) -> float:
    """The run's training work in seconds of these pass costs (search left out)."""
    partial = sum(n * costs.partial.get(k, costs.score) for k, n in c.exits.items())
    return c.forwards * costs.forward + c.backwards * costs.backward + c.selection_forwards * costs.score + partial


def search_seconds_equiv(c: Counts, costs: PassCosts) -> float:
    return c.search_forwards * costs.forward + c.search_backwards * costs.backward


def work_metrics(c: Counts, costs: PassCosts, budget: int) -> dict[str, float]:
    """Work as fractions of uniform's (budget = epochs x N samples, each a forward and a backward)."""
    unit = (costs.forward + costs.backward) * budget
    train = train_seconds_equiv(c, costs) / unit
    partial = sum(n * costs.partial.get(k, costs.score) for k, n in c.exits.items())
    return {
        "backward_fraction": c.backwards / budget,
        "realized_drop": 1 - c.backwards / budget,
        "forward_fraction": (c.forwards * costs.forward + c.selection_forwards * costs.score + partial)
        / (costs.forward * budget),
        "train_work_fraction": train,
        "work_fraction": train + search_seconds_equiv(c, costs) / unit,
        "ideal_speedup": 1 / train if train > 0 else float("nan"),
        "backward_cost_ratio": costs.backward / costs.forward if costs.forward > 0 else float("nan"),
    }


def extra_work(c: Counts) -> bool:
    """Whether a run did work beyond the training passes of the samples it backpropagated."""
    return bool(c.selection_forwards or c.partial_forwards or c.search_forwards or c.search_backwards
                or c.forwards != c.backwards)
