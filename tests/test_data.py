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


def test_images_on_disk_get_random_resized_crops_for_training_and_cached_centre_crops(tmp_path):
    import copy

    import numpy as np
    from PIL import Image

    from bench.data import FileImages

    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40 + 10 * i, 60, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    fi = FileImages(paths, 32)
    ev = fi.batch(torch.arange(4))
    assert ev.shape == (4, 3, 32, 32) and ev.dtype == torch.uint8 and fi._cache_bytes == 4 * 3 * 32 * 32
    assert torch.equal(fi.batch(torch.arange(4)), ev)  # the second scoring pass reads the cache
    g = torch.Generator().manual_seed(0)
    a = fi.batch(torch.arange(4), train=True, generator=g)
    b = fi.batch(torch.arange(4), train=True, generator=torch.Generator().manual_seed(0))
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, ev)  # seeded, not the centre
    assert copy.deepcopy(fi)._cache_bytes == 0  # a copy (a trial's model copy, a worker) shares no cache


def test_a_truncated_cached_file_is_reported_as_corrupt_not_missing(tmp_path, monkeypatch):
    import shutil

    from bench.data import load_data
    from bench.errors import BenchError
    from bench.paths import data_dir

    src = data_dir() / "FashionMNIST" / "raw"
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in src.iterdir():
        shutil.copy(f, raw / f.name)
    big = raw / "train-images-idx3-ubyte"
    big.write_bytes(big.read_bytes()[:1000])
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    with pytest.raises(BenchError, match=r"fashion_mnist in the cache is corrupt .* delete .* and fetch it again"):
        load_data("fashion_mnist")
    shutil.rmtree(raw)
    with pytest.raises(BenchError, match="fashion_mnist is not in the cache"):
        load_data("fashion_mnist")
