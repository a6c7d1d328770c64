"""IMPON: the online linear loss model learns, is reset every epoch, and picks the b highest (lowest) of a bank."""
import pytest
import torch
from torch import nn

from bench.errors import BenchError
from bench.hooks import MethodError
from bench.method import num_batches
from bench.registry import METHODS
from fakes import drive, make, cell
from methods.impon import IMPON, LinearLossModel, draw_bank

N, B = 200, 20


def test_linear_model_reduces_squared_error_on_a_stationary_stream():
    g = torch.Generator().manual_seed(0)
    w_true = torch.randn(9, generator=g)
    lin = LinearLossModel(9, lr=0.02, device="cpu")
    errs = []
    for _ in range(300):
        x = torch.randn(32, 9, generator=g)
        y = x @ w_true + 2.0 + 0.1 * torch.randn(32, generator=g)
        errs.append(float(lin.update(x, y)))
    first, last = sum(errs[:10]) / 10, sum(errs[-10:]) / 10
    assert last < 0.05 * first and last < 0.1
    assert torch.allclose(lin.predict(torch.eye(9)) - lin.b, w_true, atol=0.05)
    lin.reset()
    assert lin.w.abs().sum() == 0 and lin.b == 0 and lin.updates == 0


def test_draw_bank_is_distinct_and_covers_range():
    g = torch.Generator().manual_seed(0)
    for n, size in [(10, 10), (100, 30), (100000, 200), (5, 8)]:
        b = draw_bank(n, size, g, torch.device("cpu"))
        assert len(b) == min(n, size) == len(torch.unique(b)) and 0 <= b.min() and b.max() < n
    assert sorted(draw_bank(10, 10, g).tolist()) == list(range(10))
    a, b = (draw_bank(1000, 50, torch.Generator().manual_seed(7)) for _ in range(2))
    assert torch.equal(a, b) and not torch.equal(a, draw_bank(1000, 50, g))


def ranked_cell(variant, epochs=2, **params):
    """N samples, one input number x each (distinct), training loss 3 + x / 100. With the bank as large as
    the training set (200), each step after the first of an epoch must train the b samples the linear model
    predicts highest (lowest): the top (bottom) b by x."""
    x = torch.randperm(N, generator=torch.Generator().manual_seed(3)).float()
    rec = drive("impon", epochs=epochs, params={"variant": variant, **params}, n=N, batch_size=B,
                inputs=x.unsqueeze(1), losses=3 + x / 100)
    order = torch.argsort(x, descending=variant == "highest")
    return rec, set(order[:B].tolist())


@pytest.mark.parametrize("variant", ["highest", "lowest"])
def test_batches_are_the_b_best_predicted_of_the_bank_and_the_model_resets_every_epoch(variant):
    rec, best = ranked_cell(variant)
    for ep in rec.epochs:
        assert ep.sizes == [B] * num_batches(N, B) and ep.planned == N  # N samples in ceil(N / b) steps
        assert all(len(torch.unique(b.indices)) == B and b.weights is None for b in ep.batches)
        # step 0 of an epoch: a freshly reset (zero) model ties everywhere, a random batch
        assert set(ep.batches[0].indices.tolist()) != best
        for b in ep.batches[1:]:  # afterwards the model has learnt that the loss grows with x
            assert set(b.indices.tolist()) == best
    assert rec.counts.selection_forwards == rec.counts.partial_forwards == 0


def test_paper_preset_picks_by_its_model_too():
    rec, best = ranked_cell("highest", epochs=1, preset="paper")  # plain SGD, bank 200 = N here
    shares = [len(set(b.indices.tolist()) & best) / B for b in rec.epochs[0].batches[1:]]
    assert all(s > 0.5 for s in shares[3:])  # learns it too; the first uncentred steps may still wander


def test_cell_counts():
    rec = drive("impon", epochs=2, n=256, batch_size=64)
    c = rec.counts
    assert c.backwards == c.forwards == 2 * 256  # no drop knob: N per epoch
    assert c.steps == 2 * num_batches(256, 64) and [ep.planned for ep in rec.epochs] == [256, 256]
    assert c.selection_forwards == c.partial_forwards == c.search_forwards == 0


class TinyText(nn.Module):
    """A text model in the HF BERT layout IMPON reads: base.embeddings.word_embeddings (1-d embeddings)."""

    kind = "text"

    def __init__(self, emb: torch.Tensor):
        super().__init__()
        self.base = nn.Module()
        self.base.embeddings = nn.Module()
        self.base.embeddings.word_embeddings = nn.Embedding.from_pretrained(emb.clone(), freeze=False)


def test_text_context_is_the_mean_embedding_of_the_real_tokens_frozen_at_setup():
    g = torch.Generator().manual_seed(4)
    vocab, length = 500, 6
    emb = torch.randn(vocab, 1, generator=g)
    emb[0] = 100.0  # the padding token: counting it would rank by padding length
    ids = torch.randint(1, vocab, (N, length), generator=g)
    lengths = torch.randint(2, length + 1, (N,), generator=g)
    mask = (torch.arange(length) < lengths.unsqueeze(1)).long()
    ids = ids * mask  # padded with token 0
    mean_real = (emb[ids, 0] * mask).sum(1) / mask.sum(1)
    top = mean_real.sort(descending=True).values
    assert top[B - 1] > top[B] and not torch.equal(mean_real.argsort(), (emb[ids, 0].mean(1)).argsort())

    def scramble(model, batch):  # training moves the live embeddings far away
        model.base.embeddings.word_embeddings.weight.data.normal_(generator=g)

    rec = drive("impon", epochs=2, n=N, batch_size=B, model=TinyText(emb), inputs=lambda idx: (ids[idx], mask[idx]),
                losses=3 + mean_real, step=scramble)
    best = set(torch.argsort(mean_real, descending=True)[:B].tolist())
    for ep in rec.epochs:
        assert all(set(b.indices.tolist()) == best for b in ep.batches[1:])
    with pytest.raises(MethodError, match="base.embeddings"):
        bare = nn.Linear(1, 2)
        bare.kind = "text"
        drive("impon", epochs=1, n=N, batch_size=B, model=bare, inputs=lambda idx: (ids[idx], mask[idx]))


def test_paper_preset_is_plain_sgd_on_the_papers_bank_and_says_so():
    paper = make("impon", 0.0, preset="paper")
    assert paper.center is False and paper.faithful is True and "0.001" in paper.caveat
    harness = make("impon", 0.0)
    assert harness.center is True and harness.faithful is False and "preset=paper" in harness.caveat
    assert IMPON.faithful is False  # the class flag describes the default (harness) preset
    for bad in ({"bank_size": 100}, {"lr": 1e-3}):
        with pytest.raises(BenchError, match="preset 'paper' fixes"):
            make("impon", 0.0, preset="paper", **bad)
    centred = make("impon", 0.0, preset="paper", center=True)  # our variant of the paper's setting: its own row
    assert centred.center is True and centred.faithful is False and "centred" in centred.caveat
    with pytest.raises(MethodError, match="smaller than the bank"):
        drive("impon", epochs=1, params={"preset": "paper"}, n=1000, batch_size=200)


def test_impon_has_no_drop_knob():
    assert METHODS.get("impon").uses_drop is False
    assert make("impon", 0.5).refuse(cell(3)) is not None and make("impon", 0.0).refuse(cell(3)) is None


def test_impon_refuses_text_with_the_reason():
    why = make("impon", 0.0).refuse(cell(3, model="minilm_top2", dataset="mr"))
    assert "swing between the classes" in why and "run it on images" in why


def test_random_bank_control_draws_the_same_banks_without_the_loss_model():
    a = drive("impon", epochs=2, params={"variant": "random"}, n=1000, batch_size=50)
    b = drive("impon", epochs=2, params={"variant": "highest"}, n=1000, batch_size=50)
    assert [x.sizes for x in a.epochs] == [x.sizes for x in b.epochs]
    assert all(len(set(x.indices.tolist())) == len(x) for ep in a.epochs for x in ep.batches)
    # after the first step the loss model ranks the bank; the control does not
    assert any(not torch.equal(x.indices, y.indices) for x, y in zip(a.epochs[0].batches[1:], b.epochs[0].batches[1:]))
