"""What a method sees of the harness (bench.method.Context), and the work it is charged.

Every pass a method asks for is counted in the one `Counts` of its Trainer:
scoring passes as selection forwards, early exits as partial forwards, trials
as search forwards and backwards. Passes made inside `ctx.search()` (a search, or
a diagnostic such as SIFT's rank-correlation probe) are search forwards: they are
off the train clock, so they are off the train work too (an early exit there is
charged as a full forward, the conservative count).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, fields

import torch

from bench.method import Context, Method, Scores, call_hook


@dataclass
class Counts:
    """Realized per-sample work. Selection passes are counted, never hidden."""

    forwards: int = 0  # training forwards
    backwards: int = 0
    selection_forwards: int = 0  # full no-grad scoring passes (ctx.score)
    partial_forwards: int = 0  # early-exit passes through the first k stages
    search_forwards: int = 0  # inside trials (search)
    search_backwards: int = 0
    steps: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def since(self, before: dict[str, int]) -> "Counts":
        """The work done since `before` (an earlier as_dict())."""
        return Counts(**{k: v - before[k] for k, v in self.as_dict().items()})

    def load(self, state: dict[str, int]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


class HarnessContext(Context):
    """The Context a method sees, backed by a Trainer (its data, evaluation and optimizer)."""

    def __init__(self, trainer, method_drop: float, epochs: int, seed: int, counts: Counts | None = None,
                 artifact_sink=None, model=None):
        self.trainer = trainer
        self.n_train = len(trainer.train)
        self.num_classes = trainer.data.num_classes
        self.epochs = epochs
        self.batch_size = trainer.cfg.batch_size
        self.drop = method_drop
        self.labels = trainer.data.train.y.clone()
        self.generator = torch.Generator().manual_seed(seed)
        self.device = trainer.device
        self.model = model if model is not None else trainer.model
        self.counts = counts if counts is not None else Counts()
        self.exits: dict[int, int] = {}  # samples passed through each early exit k (their cost depends on k)
        self.artifact_sink = artifact_sink  # set once the run is open
        self._searching = 0  # inside ctx.search(): passes are search work

    def score(self, indices: torch.Tensor) -> Scores:
        if self._searching:
            self.counts.search_forwards += len(indices)
        else:
            self.counts.selection_forwards += len(indices)
        return self.trainer.forward_eval(self.model, self.trainer.train, indices)

    @torch.no_grad()
    def early_exit(self, indices: torch.Tensor, k: int):
        if self._searching:
            self.counts.search_forwards += len(indices)
        else:
            self.counts.partial_forwards += len(indices)
            self.exits[k] = self.exits.get(k, 0) + len(indices)
        tr = self.trainer
        x, mask, _ = tr.inputs(tr.train, indices)
        self.model.eval()
        with tr.amp:
            out = self.model.early_exit(x, mask, k)
        out.features = out.features.float()
        if out.logits is not None:
            out.logits = out.logits.float()
        return out

    def inputs(self, indices: torch.Tensor):
        x, mask, _ = self.trainer.inputs(self.trainer.train, indices)
        return x, mask

    def trial(self, method: Method, epochs: int) -> float:
        """A copy of the model trained with its own optimizer, counts and context; its
        training forwards, backwards and scoring passes are charged here as search."""
        tr = self.trainer
        with tr.timer.exclusive("search"):
            seed = int(torch.randint(0, 2**31, (1,), generator=self.generator))
            sub = HarnessContext(tr, method.drop, epochs, seed, model=copy.deepcopy(self.model))
            call_hook(method, "setup", sub)
            tr.train_copy(method, sub, epochs)
            acc, _ = tr.evaluate(tr.val, sub.model)
            tr.timer.flush()
        self.counts.search_forwards += sub.counts.forwards + sub.counts.selection_forwards
        self.counts.search_backwards += sub.counts.backwards
        return acc

    @contextlib.contextmanager
    def search(self):
        with self.trainer.timer.exclusive("search"):
            self._searching += 1
            try:
                yield
            finally:
                self._searching -= 1

    def log_artifact(self, name: str, obj) -> None:
        if self.artifact_sink:
            self.artifact_sink(name, obj)
