"""Pass costs from the flop counter: sensible ratios, and the model is left untouched."""
import torch

from bench.costs import PassCosts
from bench.models import InputSpec, create_model


def test_costs_of_tiny_cnn_and_model_untouched():
    torch.manual_seed(0)
    m = create_model("tiny_cnn", InputSpec("image", 10, 1, 28))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    c = PassCosts(m, torch.randn(4, 1, 28, 28), None, torch.randint(0, 10, (4,)))
    assert 1.5 < c.backward < 2.5
    parts = [c.partial(k) for k in range(1, m.num_exits + 1)]
    assert parts == sorted(parts) and parts[0] < 0.2 and abs(parts[-1] - 1.0) < 0.01
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert all(p.grad is None for p in m.parameters())


def test_costs_of_a_text_model():
    m = create_model("tiny_bert", InputSpec("text", 2))
    x, mask = torch.randint(0, 100, (4, 16)), torch.ones(4, 16, dtype=torch.long)
    c = PassCosts(m, x, mask, torch.randint(0, 2, (4,)))
    assert 1.5 < c.backward < 2.5 and 0 < c.partial(1) < c.partial(2) <= 1.0
