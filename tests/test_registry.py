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


@pytest.fixture
def scratch_methods():
    list_methods()
    saved = dict(METHODS._entries)
    yield
    METHODS._entries.clear()
    METHODS._entries.update(saved)


def test_register_method_works_bare_and_called(scratch_methods):
    from bench.method import Method, register
    from bench.registry import register_method

    @register_method
    class A(Method):
        name = "spelling_a"

    @register_method()
    class B(Method):
        name = "spelling_b"

    @register
    class C(Method):
        name = "spelling_c"

    @register()
    class D(Method):
        name = "spelling_d"

    @register("spelling_e")
    class E(Method):  # no own name: takes the registered one
        pass

    for cls in (A, B, C, D, E):  # still the class, not a decorator function
        assert isinstance(cls, type) and METHODS.get(cls.name) is cls
    assert E.name == "spelling_e"


def test_wrong_registrations_fail_loudly(scratch_methods):
    from bench.method import Method, register
    from bench.registry import register_method

    with pytest.raises(TypeError, match="set `name"):
        @register_method
        class NoName(Method):
            pass

    with pytest.raises(TypeError, match="its name is 'own'"):
        @register("other")
        class Mismatch(Method):
            name = "own"

    with pytest.raises(TypeError, match="Method subclass"):
        @register
        def not_a_class():
            pass

    with pytest.raises(TypeError, match="names are strings"):
        register_method(3)
    with pytest.raises(ValueError, match="registered twice"):
        @register
        class Twin(Method):
            name = "uniform"
