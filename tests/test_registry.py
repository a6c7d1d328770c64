import pytest

from bench.errors import BenchError
from bench.registry import DATASETS, METHODS, MODELS, list_datasets, list_methods, list_models


def test_registries_hold_the_required_entries():
    assert {"resnet18", "resnet50", "seresnext50", "mobilenetv2", "vit_tiny", "swin_tiny", "minilm", "bert_base",
            "tiny_cnn", "tiny_bert"} <= set(list_models())
    assert {"fashion_mnist", "mnist5k", "digits", "mr", "cifar10", "cifar100", "svhn", "glue_sst2",
            "imagenet"} <= set(list_datasets())
    assert {"uniform", "random_subset"} <= set(list_methods())


@pytest.mark.parametrize("registry", [DATASETS, MODELS, METHODS], ids=lambda r: r.kind)
def test_unknown_name_lists_the_known_ones(registry):
    registry.names()  # no priming import needed
    with pytest.raises(BenchError) as e:
        registry.get("nosuch")
    msg = str(e.value)
    assert "nosuch" in msg and registry.names()[0] in msg and "\n" not in msg


@pytest.mark.parametrize("name", list_methods())
def test_every_method_is_documented_and_builds_with_defaults(name):
    cls = METHODS.get(name)
    import sys

    assert (cls.__doc__ or sys.modules[cls.__module__].__doc__), f"{name} has no docstring"
    method = cls.build(0.5, {})
    assert method.keep == pytest.approx(0.5)
    with pytest.raises(BenchError, match="no parameter"):
        cls.build(0.5, {"no_such_parameter": 1})
