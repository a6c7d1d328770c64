import pytest
import torch

from bench.models import InputSpec, create_model, model_kind
from bench.registry import list_models

IMAGE = InputSpec("image", 10, channels=1, size=28)
TEXT = InputSpec("text", 2)


@pytest.mark.parametrize("name", list_models())
def test_model_forward_and_early_exit(name):
    torch.manual_seed(0)
    if model_kind(name) == "image":
        model, x, mask = create_model(name, IMAGE), torch.randn(2, 1, 28, 28), None
    else:
        if name == "bert_base":
            pytest.skip("110M parameters: built in test_bert_base_builds_from_config")
        model, x, mask = create_model(name, TEXT), torch.randint(0, 1000, (2, 16)), torch.ones(2, 16, dtype=torch.long)
    model.eval()
    with torch.no_grad():
        logits = model(x, mask)
        assert logits.shape == (2, 10 if model_kind(name) == "image" else 2)
        assert model.num_exits >= 2
        ex = model.early_exit(x, mask, 1)
        assert ex.features.shape[0] == 2 and ex.features.ndim == 2
        if ex.logits is not None:
            assert ex.logits.shape == logits.shape


def test_small_image_stem_keeps_resolution():
    m = create_model("resnet18", IMAGE)
    assert m.net.conv1.stride == (1, 1) and m.net.conv1.kernel_size == (3, 3)
    assert isinstance(m.net.maxpool, torch.nn.Identity)


def test_bert_base_builds_from_config():
    m = create_model("bert_base", TEXT)
    assert sum(p.numel() for p in m.parameters()) > 100e6 and m.num_exits == 12


def test_kind_mismatch_is_a_clear_error():
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="text models"):
        create_model("resnet18", TEXT)


def test_frozen_trunk_is_exact_and_trains_only_the_top():
    from bench.models.bert import HFClassifier

    torch.manual_seed(0)
    m = create_model("minilm_top2", TEXT)
    x = torch.randint(1000, 5000, (4, 12))
    mask = torch.ones_like(x)
    mask[0, 8:] = 0
    m.eval()
    with torch.no_grad():
        plain = HFClassifier.forward(m, x, mask)  # every layer computed, nothing cached
        assert torch.allclose(m(x, mask), plain, atol=1e-5)
        assert torch.allclose(m(x, mask), plain, atol=1e-5)  # the second time from the cache
        top = m.early_exit(x, mask, 5)
        assert torch.allclose(top.features, HFClassifier.early_exit(m, x, mask, 5).features, atol=1e-5)
    m.train()
    m(x, mask).sum().backward()
    assert all(p.grad is None for p in m.base.embeddings.parameters())
    assert all(p.grad is None for p in m.base.encoder.layer[:4].parameters())
    assert all(p.grad is not None for p in m.base.encoder.layer[4:].parameters())


def test_a_copy_of_a_frozen_trunk_model_shares_its_cache():
    """A search trial deep-copies the model: the trunk's cached outputs must not be copied with it."""
    import copy

    from bench.models import InputSpec, create_model

    m = create_model("minilm_top2", InputSpec("text", 2))
    m.eval()
    m(torch.randint(0, 1000, (3, 12)), torch.ones(3, 12, dtype=torch.long))
    c = copy.deepcopy(m)
    assert c.rows is m.rows and len(m.rows) >= 3
