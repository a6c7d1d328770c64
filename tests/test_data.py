import pytest
import torch

from bench.data import flip_labels, load_data, stratified_take
from bench.models.bert import bert_tokenizer

OFFLINE = ["fashion_mnist", "mnist5k", "digits", "mr"]


def _load(name, **kw):
    tok = bert_tokenizer() if name == "mr" else None
    return load_data(name, tokenizer=tok, max_length=32, **kw)


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_dataset_has_three_disjoint_labelled_splits(name):
    d = _load(name, train_limit=200)
    assert len(d.train) == 200 and len(d.val) > 0 and len(d.test) > 0
    for split in (d.train, d.val, d.test):
        assert split.y.min() >= 0 and split.y.max() < d.num_classes
        assert len(split.x) == len(split.y)
    # classes stay balanced under the limit (stratified)
    counts = torch.bincount(d.train.y, minlength=d.num_classes)
    assert counts.max() - counts.min() <= max(3, 0.2 * counts.float().mean())
    if d.kind == "image":
        assert d.train.x.dtype == torch.uint8 and d.train.x.ndim == 4
    else:
        assert d.train.mask is not None and d.train.x.shape == d.train.mask.shape


def test_validation_is_carved_from_train_with_a_fixed_seed():
    a, b = _load("digits"), _load("digits")
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    # no validation image appears in train
    tr = {bytes(x.numpy()) for x in a.train.x}
    assert sum(bytes(x.numpy()) in tr for x in a.val.x) < 0.05 * len(a.val)


def test_label_noise_flips_exactly_the_fraction_to_other_classes():
    y = torch.arange(1000) % 10
    noisy = flip_labels(y, 0.3, 10)
    assert (noisy != y).sum() == 300
    assert torch.equal(noisy, flip_labels(y, 0.3, 10))
    clean, noisy_data = _load("digits"), _load("digits", label_noise=0.4)
    assert (clean.train.y != noisy_data.train.y).float().mean() == pytest.approx(0.4, abs=0.01)
    assert torch.equal(clean.val.y, noisy_data.val.y)  # validation stays clean


def test_stratified_take_is_exact_and_balanced():
    y = torch.cat([torch.zeros(900), torch.ones(100)]).long()
    idx, rest = stratified_take(y, 100)
    assert len(idx) == 100 and len(rest) == 900
    assert (y[idx] == 1).sum() == 10
