"""What a method sees of the harness (bench.method.Context), backed by a Trainer.

Every pass a method asks for is counted in the Trainer's `Counts` (bench/work.py): scoring
passes as selection forwards, early exits as partial forwards (per depth), trials as search
forwards and backwards. Passes made inside `ctx.search()` (a search, or a diagnostic such as
SIFT's rank-correlation probe) are search forwards: off the train clock and the train work.
"""
from __future__ import annotations

import contextlib
import copy

import torch

from bench import hooks
from bench.method import Context, Method, Scores
from bench.work import Counts


class HarnessContext(Context):
    def __init__(self, trainer, epochs: int, seed: int, counts: Counts | None = None, artifact_sink=None, model=None):
        self.trainer = trainer
        self.n_train = len(trainer.train)
        self.num_classes = trainer.data.num_classes
        self.epochs = epochs
        self.epoch = 0
        self.batch_size = trainer.cfg.batch_size
        self.device = trainer.device
        self.labels = trainer.data.train.y.to(self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.model = model if model is not None else trainer.model
        self.counts = counts if counts is not None else Counts()
        self.artifact_sink = artifact_sink  # set once the run is open
        self._searching = 0  # inside ctx.search(): passes are search work

    def score(self, indices: torch.Tensor) -> Scores:
        if self._searching:
            self.counts.search_forwards += len(indices)
        else:
            self.counts.selection_forwards += len(indices)
        with self.trainer.syncs.at("harness"):
            return self.trainer.forward_eval(self.model, self.trainer.train, indices)

    def early_exit(self, indices: torch.Tensor, k: int):
        if self._searching:
            self.counts.search_forwards += len(indices)
        else:
            self.counts.partial_forwards += len(indices)
            self.counts.exits[k] = self.counts.exits.get(k, 0) + len(indices)
        with self.trainer.syncs.at("harness"):
            return self.trainer.early_exit(self.model, indices, k)

    def inputs(self, indices: torch.Tensor):
        with self.trainer.syncs.at("harness"):
            x, mask, _ = self.trainer.inputs(self.trainer.train, indices)
        return x, mask

    def trial(self, method: Method, epochs: int) -> float:
        """A copy of the model trained with its own optimizer, counts and context; its training
        forwards, backwards and scoring passes are charged here as search."""
        tr = self.trainer
        with tr.timer.exclusive("search"), tr.syncs.at(""):
            seed = int(torch.randint(0, 2**31, (1,), generator=self.generator, device=self.device))
            sub = HarnessContext(tr, epochs, seed, model=copy.deepcopy(self.model))
            hooks.setup(method, sub)
            tr.train_copy(method, sub, epochs)
            acc, _ = tr.evaluate(tr.val, sub.model)
        self.counts.search_forwards += sub.counts.forwards + sub.counts.selection_forwards + sub.counts.partial_forwards
        self.counts.search_backwards += sub.counts.backwards
        return acc

    @contextlib.contextmanager
    def search(self):
        with self.trainer.timer.exclusive("search"), self.trainer.syncs.at(""):
            self._searching += 1
            try:
                yield
            finally:
                self._searching -= 1

    def log_artifact(self, name: str, obj) -> None:
        if self.artifact_sink:
            self.artifact_sink(name, obj)
