"""The matrix for real: every registered model trains with every method for a few steps, on CPU, on
tiny real data at the model's own input handling (Fashion-MNIST 28x28 for image models, MR sentences
for text), and the counts add up. A new model or method joins with no new test code. A method that
refuses a model (IMPON on text) must say why in one line."""
import math

import pytest
import torch

from bench.config import CellConfig
from bench.registry import METHODS, list_methods, list_models
from bench.suite import refusal

# the fewest epochs each method acts in (its warm-up, SwiftLearn's two epochs, InfoBatch's pruning epoch)
EPOCHS = {"swiftlearn": 3, "infobatch": 3, "sift": 2, "selective_backprop": 2, "psgd": 2, "csgd": 2}
PARAMS = {"swift_sampler": {"bo_steps": 1, "init_random": 1, "fine_tune_epochs": 1, "warmup_epochs": 1},
          "sift": {"corr_threshold": -1.0}, "swiftlearn": {"warmup_epochs": 2}, "ub_importance": {"tau_th": 0.0}}


def _cell(model: str, method: str) -> CellConfig:
    from bench.models import model_kind

    text = model_kind(model) == "text"
    drop = 0.5 if METHODS.get(method).uses_drop else 0.0
    # 17 samples in batches of 8: two full batches and a tail of ONE sample (batch norm cannot train on it)
    return CellConfig(model=model, dataset="mr" if text else "fashion_mnist", method=method, drop=drop,
                      epochs=EPOCHS.get(method, 1), batch_size=8, train_limit=17, eval_limit=10, max_length=16,
                      device="cpu", progress=False, params=PARAMS.get(method, {}), lr=1e-3 if text else 0.01)


_LOADED: dict = {}


def _load(cfg: CellConfig):
    """The cell's data and a fresh copy of its model's initial weights (built once per model)."""
    import copy

    from bench.cell import load_cell

    if cfg.model not in _LOADED:
        _LOADED.clear()  # one model at a time: BERT-base is 440 MB
        _LOADED[cfg.model] = load_cell(cfg)
    data, net = _LOADED[cfg.model]
    return data, copy.deepcopy(net)


@pytest.mark.parametrize("method", list_methods())
@pytest.mark.parametrize("model", list_models())
def test_every_model_trains_with_every_method(model, method):
    from bench.engine import Trainer

    cfg = _cell(model, method)
    why = refusal(cfg)
    if why:  # a refusal is one line that says why
        assert "\n" not in why and len(why) > 20
        return
    data, net = _load(cfg)
    tr = Trainer(cfg, data, net, torch.device("cpu"), method=cfg.build_method())
    tr.start()
    sizes, skipped = [], 0
    for e in range(cfg.epochs):  # the training loop alone: evaluation is the same for every method
        loss, bad, epoch_sizes = tr._epoch(tr.loop, e, watch=True)
        assert int(bad) < 0 and math.isfinite(float(loss)), f"loss not finite in epoch {e}"
        sizes += epoch_sizes
    c = tr.counts
    assert c.forwards == c.backwards == sum(sizes) and c.steps == len(sizes) > 0
    assert min(sizes) >= (2 if tr.needs_two else 1) and c.partial_forwards == sum(c.exits.values())
    if tr.needs_two and method == "uniform":  # the tail of one sample was skipped, and counted
        assert c.skipped == cfg.epochs
    if method == "sift":  # its early exits ran on this model, and it backpropagated kept halves after epoch 0
        assert c.partial_forwards > 0 and c.backwards < cfg.epochs * 17
    if method in ("selective_backprop", "ub_importance"):
        assert c.selection_forwards > 0
