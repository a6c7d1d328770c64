"""Swift Sampler: a 10-parameter sampler over two per-sample features, found by Bayesian optimisation.

Paper: "Swift Sampler: Efficient Learning of Sampler by 10 Parameters", Yao, Li,
Xiao, arXiv 2410.05578 (seed 002; harness spec in METHODS.md, section Swift
Sampler).

Steps
1. Shared start: `warmup_epochs` uniform epochs (all data) from the initial
   weights give w0. With `final="scratch"` (default, as the paper) they run at the
   start of epoch 0 as a harness trial on a copy of the model (`ctx.trial`: counted
   and timed as search), and w0 is that copy's weights; with `final="continue"` they
   are the first epochs of the main run.
2. One eval-mode `ctx.score` pass over all training data with w0 (inside
   `ctx.search()`, so counted as search forwards, also when a saved sampler is
   applied) gives, per sample, its loss and its renormed entropy
   H(softmax) / log(C).
3. Each feature is mapped to [0, 1] by `transform`: "cgf" (default, cumulative
   gradient function: the share of the total per-sample gradient norm held by
   samples with a smaller feature value; the per-sample gradient norm is
   approximated by ||softmax - onehot||) or "cdf" (empirical CDF, the paper's
   ablation; the cgf with equal weights).
4. Sampler: per feature a piecewise-linear function on [0, 1] with S = 4 equal
   segments, given by its 5 knot values (2 features x 5 = 10 parameters); a
   sample's weight is the product of its two values (`combine="product"`,
   default; "mean" as an option), normalised to probabilities.
5. Outer loop: Bayesian optimisation (BoTorch SingleTaskGP with standardised
   outcomes, UpperConfidenceBound, optimize_acqf) over the knots in [0, 1]^10, for
   `bo_steps` = 40 candidates in all, the first `init_random` = 5 of them from a
   scrambled Sobol sequence. Each candidate is scored by `ctx.trial`: fine-tune a
   copy of w0 for `fine_tune_epochs` = 5 epochs with that sampler and return the
   accuracy on the validation split carved from the training set (never test).
6. The best candidate is logged (`swift_sampler.json`: knots, features,
   transform, combine, best validation accuracy, history). Final training:
   `final="scratch"` (default): the main run trains all E epochs from the initial
   weights, each epoch drawing round(keep * N) samples by the sampler's
   probabilities (with replacement when drop = 0, without otherwise);
   `final="continue"` (option): the main run goes on from w0 for the remaining
   E - warmup_epochs epochs with that draw.
   `sampler_path` loads such a JSON and skips the BO search (the paper's transfer
   result); the shared start and the feature pass still run, on this run's model.

The search runs when the first sampled epoch draws its samples (epoch 0, or the first
epoch after the shared start with `final="continue"`).

Search accounting: everything in steps 1-5 of the scratch mode (the shared start's
training, the feature pass, GP fits, acquisition optimisation and trials) runs inside
`ctx.search()`, so its time is search time (in end-to-end time, not train time), and
the trials' passes are counted as search forwards and backwards. The feature pass is
counted as selection forwards. With `final="continue"` the shared start is the main
run's own training (train time, training counts).

Drop ratio: the paper has none (its setting is drop 0: a full-length epoch of
draws, with replacement). A drop ratio > 0 is our extension: the sampler then
draws round(keep * N) distinct samples per epoch, in trials and in the final run.

Our choices (left open by the paper or by the harness budget)
- warmup_epochs = 2 uniform epochs for the shared start.
- Scratch mode obtains w0 with a uniform trial whose model copy is kept, then
  loads w0 into the harness model for the feature pass and the trials (which
  copy it) and restores the initial weights before the main run's first step:
  the main model is never stepped by the method.
- The features (and so the probabilities) are those of w0, fixed for the whole
  final training (METHODS.md, step 2).
- init_random = 5 Sobol candidates (counted in bo_steps); UCB beta = 2.0;
  optimize_acqf with 10 restarts and 256 raw samples; knots box [0, 1]^10.
- A candidate whose weights are all zero falls back to uniform probabilities.
  Sampling without replacement with fewer positive-weight samples than needed
  adds a 1e-12 floor so the draw is possible.
- Ties in the transform: tied values get the same transformed value (the share
  held by strictly smaller values), min-max normalised onto [0, 1]; a constant
  feature maps to 0.5.
- Trials and the final epochs share the keep ratio; each trial's optimizer and LR
  schedule are the harness's (fresh, planned for the trial's steps).
- BoTorch draws from torch's global RNG: every BO step runs inside
  torch.random.fork_rng seeded from a CPU generator seeded from ctx.generator, so the
  search is reproducible and the global RNG the harness checkpoints is untouched.

Host syncs: none per step (the draw runs on ctx.device); one per sampled epoch at drop > 0
(a draw without replacement checks there are enough samples with weight). The search reads
its trials' accuracies and runs its GP on the host: search work, not counted.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from bench.method import Batch, Method, Param, register

FEATURES = ("loss", "renormed_entropy")
SEGMENTS = 4
KNOTS = SEGMENTS + 1


# ---------------------------------------------------------------- features and transforms


def sample_features(logits: torch.Tensor, losses: torch.Tensor, labels: torch.Tensor):
    """(N, 2) features [loss, entropy / log C] and the per-sample gradient-norm proxy ||softmax - onehot||."""
    logits = logits.float()
    c = logits.shape[1]
    logp = F.log_softmax(logits, 1)
    p = logp.exp()
    entropy = -(p * logp).sum(1) / math.log(c) if c > 1 else torch.zeros(len(p), device=p.device)
    onehot = F.one_hot(labels.to(p.device).long(), c).float()
    grad_norm = (p - onehot).norm(dim=1)
    return torch.stack([losses.float(), entropy], 1), grad_norm


def cumulative_transform(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Map values to [0, 1]: the share of `weights` held by samples with a strictly smaller value,
    min-max normalised so the smallest value maps to 0 and the largest to 1. Weights = gradient norms
    give the cumulative gradient function (cgf); equal weights give the empirical CDF."""
    v = values.detach().double().cpu()
    w = torch.ones_like(v) if weights is None else weights.detach().double().cpu().clamp_min(0)
    sv, order = torch.sort(v)
    _, inv = torch.unique_consecutive(sv, return_inverse=True)
    group = torch.zeros(int(inv.max()) + 1 if len(v) else 0, dtype=torch.float64).index_add_(0, inv, w[order])
    below = torch.cumsum(group, 0) - group  # weight held by strictly smaller values, per distinct value
    out = torch.empty_like(v)
    top = below[-1] if len(below) else v.new_tensor(0.0)
    if len(below) <= 1 or top <= 0:
        # one distinct value, or all weight on the smallest value: fall back to ranks of distinct values
        if len(below) <= 1:
            return torch.full_like(v, 0.5)
        below = torch.arange(len(below), dtype=torch.float64)
        top = below[-1]
    out[order] = below[inv] / top
    return out


def transform_features(feats: torch.Tensor, grad_norm: torch.Tensor, transform: str) -> torch.Tensor:
    """(N, F) raw features -> (N, F) in [0, 1], float64 on CPU."""
    w = grad_norm if transform == "cgf" else None
    return torch.stack([cumulative_transform(feats[:, j], w) for j in range(feats.shape[1])], 1)


# ---------------------------------------------------------------- the sampler


def piecewise_linear(t: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Evaluate a piecewise-linear function with len(knots)-1 equal segments on [0, 1] at t."""
    s = len(knots) - 1
    pos = t.clamp(0, 1) * s
    seg = pos.floor().clamp(0, s - 1).long()
    frac = pos - seg
    return knots[seg] * (1 - frac) + knots[seg + 1] * frac


def sampler_probs(t: torch.Tensor, knots, combine: str = "product") -> torch.Tensor:
    """Probabilities (N,) from transformed features t (N, F) and knots (F, KNOTS); uniform if all weights vanish."""
    k = torch.as_tensor(knots, dtype=torch.float64).reshape(t.shape[1], -1).clamp_min(0)
    vals = torch.stack([piecewise_linear(t[:, j].double(), k[j]) for j in range(t.shape[1])], 1)
    w = vals.prod(1) if combine == "product" else vals.mean(1)
    total = w.sum()
    if not torch.isfinite(total) or total <= 0:
        return torch.full((len(t),), 1.0 / len(t), dtype=torch.float64)
    return w / total


def draw(probs: torch.Tensor, k: int, replacement: bool, generator: torch.Generator) -> torch.Tensor:
    """k indices drawn by probs, on the generator's device. Without replacement, a 1e-12 floor keeps
    the draw possible when fewer than k samples have weight (checking costs a host sync, once an epoch)."""
    p = probs.double().to(generator.device)
    if not replacement and int((p > 0).sum()) < k:
        p = p + 1e-12
    return torch.multinomial(p, k, replacement=replacement, generator=generator)


class _SamplerTrial(Method):
    """Inner method for one candidate (not registered): each epoch draws round(keep * N) samples by `probs`."""

    name = "swift_sampler_trial"

    def __init__(self, drop: float, probs: torch.Tensor):
        super().__init__(drop)
        self.probs = probs

    def epoch_size(self, epoch: int) -> int:
        return self.keep_count

    def epoch_indices(self, epoch: int) -> Batch:
        return Batch(draw(self.probs, self.epoch_size(epoch), self.drop == 0, self.ctx.generator))


class _SharedStart(Method):
    """Inner method (not registered): uniform epochs on a trial's model copy, whose weights it keeps (w0)."""

    name = "swift_sampler_shared_start"

    def end_epoch(self, epoch: int) -> None:
        if epoch == self.ctx.epochs - 1:
            self.weights = copy.deepcopy(self.ctx.model.state_dict())


# ---------------------------------------------------------------- Bayesian optimisation


def bayes_opt(objective: Callable[[torch.Tensor], float], dim: int, steps: int, init_random: int,
              generator: torch.Generator, beta: float = 2.0, num_restarts: int = 10, raw_samples: int = 256,
              log: Callable[[int, list, float], None] | None = None):
    """Maximise `objective` over [0, 1]^dim: `init_random` Sobol points, then GP-UCB, `steps` evaluations in all.
    Returns (best_x, best_y, history) with history a list of (x list, y)."""
    from botorch.acquisition import UpperConfidenceBound
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from botorch.optim import optimize_acqf
    from gpytorch.mlls import ExactMarginalLogLikelihood

    def seed() -> int:
        return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))

    n_init = max(1, min(init_random, steps))
    xs = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed()).draw(n_init).double()
    ys: list[float] = []
    history = []

    def evaluate(x: torch.Tensor) -> None:
        y = float(objective(x))
        ys.append(y)
        history.append((x.tolist(), y))
        if log:
            log(len(ys) - 1, x.tolist(), y)

    for x in xs:
        evaluate(x)
    bounds = torch.stack([torch.zeros(dim), torch.ones(dim)]).double()
    X = xs
    while len(ys) < steps:
        Y = torch.tensor(ys, dtype=torch.float64).unsqueeze(1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed())
            flat = len(ys) < 2 or float(Y.std()) == 0
            if not flat:
                gp = SingleTaskGP(X, Y, outcome_transform=Standardize(m=1))
                try:
                    fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
                except Exception:  # a failed fit keeps the prior hyper-parameters; the GP still conditions on data
                    pass
                acq = UpperConfidenceBound(gp, beta=beta)
                cand, _ = optimize_acqf(acq, bounds=bounds, q=1, num_restarts=num_restarts, raw_samples=raw_samples)
                x = cand.detach().squeeze(0).clamp(0, 1)
            else:  # flat objective so far: nothing to model, explore at random
                x = torch.rand(dim, dtype=torch.float64)
        evaluate(x)
        X = torch.cat([X, x.unsqueeze(0)])
    best = max(range(len(ys)), key=lambda i: ys[i])
    return X[best], ys[best], history


# ---------------------------------------------------------------- the method


@register
class SwiftSampler(Method):
    name = "swift_sampler"
    warmup_epochs = Param(2, "[1, inf)", doc="uniform epochs of the shared start w0")
    bo_steps = Param(40, "[1, inf)", doc="candidates evaluated in all (Sobol ones included)")
    init_random = Param(5, "[1, inf)", doc="scrambled Sobol candidates before the GP")
    fine_tune_epochs = Param(5, "[1, inf)", doc="epochs each candidate fine-tunes from w0")
    transform = Param("cgf", choices=("cgf", "cdf"), doc="feature transform: cumulative gradient function, or CDF")
    combine = Param("product", choices=("product", "mean"), doc="how the two features' values combine")
    ucb_beta = Param(2.0, "(0, inf)", doc="UCB exploration weight")
    sampler_path = Param(None, kind=str, doc="a saved swift_sampler.json to apply instead of searching")
    final = Param("scratch", choices=("scratch", "continue"), doc="final training from scratch, or on from w0")

    def __init__(self, drop: float = 0.0, **params):
        super().__init__(drop, **params)
        if self.sampler_path is not None and not Path(self.sampler_path).is_file():
            raise ValueError(f"sampler_path {self.sampler_path} is not a file "
                             "(give the swift_sampler.json artifact of an earlier run)")

    def setup(self) -> None:
        self.probs: torch.Tensor | None = None  # the final sampler's probabilities (N, on ctx.device)
        self.sampler: dict | None = None  # what was logged

    def refuse(self, cell) -> str | None:
        epochs = cell.epochs
        if self.final == "continue" and epochs <= self.warmup_epochs:
            return (f"swift_sampler (final=continue) needs epochs > warmup_epochs ({self.warmup_epochs}); this cell "
                    f"has {epochs}: raise epochs, lower warmup_epochs or use final=scratch")
        return None

    def _sampled(self, epoch: int) -> bool:
        """Whether this epoch of the main run draws by the sampler."""
        return self.final == "scratch" or epoch >= self.warmup_epochs

    def epoch_size(self, epoch: int) -> int:
        return self.keep_count if self._sampled(epoch) else self.ctx.n_train

    def epoch_indices(self, epoch: int) -> Batch:
        if not self._sampled(epoch):
            return Batch(self.randperm(self.ctx.n_train))
        if self.probs is None:  # the first sampled epoch: search first (all of it search work)
            with self.ctx.search():
                self._from_shared_start() if self.final == "scratch" else self.learn()
        return Batch(draw(self.probs, self.keep_count, self.drop == 0, self.ctx.generator))

    def _from_shared_start(self) -> None:
        """Train w0 on a copy, search from it, then put the initial weights back for the final training."""
        model = self.ctx.model
        initial = copy.deepcopy(model.state_dict())
        start = _SharedStart(0.0)
        self.ctx.trial(start, epochs=self.warmup_epochs)
        model.load_state_dict(start.weights)
        try:
            self.learn()
        finally:
            model.load_state_dict(initial)

    # -- the search

    def transformed_features(self, transform: str) -> torch.Tensor:
        sc = self.ctx.score(torch.arange(self.ctx.n_train, device=self.ctx.device))
        feats, grad_norm = sample_features(sc.logits, sc.losses, self.ctx.labels)
        return transform_features(feats, grad_norm, transform)

    def learn(self) -> None:
        if self.sampler_path is not None:
            saved = json.loads(Path(self.sampler_path).read_text())
            transform, combine = saved.get("transform", self.transform), saved.get("combine", self.combine)
            t = self.transformed_features(transform)
            knots = torch.tensor(saved["knots"], dtype=torch.float64)
            self.sampler = {**saved, "loaded_from": str(self.sampler_path)}
            self.probs = sampler_probs(t, knots, combine).to(self.ctx.device)
            return
        t = self.transformed_features(self.transform)

        def objective(x: torch.Tensor) -> float:
            probs = sampler_probs(t, x.reshape(len(FEATURES), KNOTS), self.combine).to(self.ctx.device)
            return self.ctx.trial(_SamplerTrial(self.drop, probs), epochs=self.fine_tune_epochs)

        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.ctx.generator,
                                                              device=self.ctx.device)))
        best_x, best_y, history = bayes_opt(objective, len(FEATURES) * KNOTS, self.bo_steps, self.init_random,
                                            gen, beta=self.ucb_beta)
        knots = best_x.reshape(len(FEATURES), KNOTS)
        self.sampler = {
            "knots": knots.tolist(), "features": list(FEATURES), "segments": SEGMENTS, "transform": self.transform,
            "combine": self.combine, "best_val_acc": best_y, "fine_tune_epochs": self.fine_tune_epochs,
            "bo_steps": self.bo_steps, "init_random": self.init_random, "warmup_epochs": self.warmup_epochs,
            "final": self.final,
            "keep": self.keep, "history": [{"knots": x, "val_acc": y} for x, y in history],
        }
        self.probs = sampler_probs(t, knots, self.combine).to(self.ctx.device)
        self.ctx.log_artifact("swift_sampler.json", self.sampler)
