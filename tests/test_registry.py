import pytest

from bench import hooks
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
    method = hooks.build(cls, 0.5, {})
    assert method.keep == pytest.approx(0.5)
    with pytest.raises(BenchError, match="no parameter"):
        hooks.build(cls, 0.5, {"no_such_parameter": 1})
    for name, p in hooks.declared(cls).items():  # every declared parameter says what it is and takes its default
        assert p.doc, f"{cls.name}.{name} has no doc"
        assert hooks.check_param(cls.name, name, p, p.default) == p.default or p.default is None


@pytest.mark.parametrize("params,message", [
    ({"beta": -1}, r"beta must be in \[0, inf\)"), ({"history": 1.5}, "history must be an integer"),
    ({"beta": True}, "beta must be a number"), ({"history": 0}, r"history must be in \[1, inf\)"),
])
def test_declared_parameters_are_checked_in_one_line(params, message):
    with pytest.raises(BenchError, match=message):
        hooks.build(METHODS.get("selective_backprop"), 0.5, params)
    with pytest.raises(BenchError, match="variant must be one of loss, entropy"):
        hooks.build(METHODS.get("sift"), 0.5, {"variant": "nope"})


@pytest.fixture
def scratch_methods():
    list_methods()
    saved = dict(METHODS._entries)
    yield
    METHODS._entries.clear()
    METHODS._entries.update(saved)


def test_register_works_bare_and_called(scratch_methods):
    from bench.method import Method, register

    @register
    class C(Method):
        name = "spelling_c"

    @register()
    class D(Method):
        name = "spelling_d"

    @register("spelling_e")
    class E(Method):  # no own name: takes the registered one
        pass

    for cls in (C, D, E):  # still the class, not a decorator function
        assert isinstance(cls, type) and METHODS.get(cls.name) is cls
    assert E.name == "spelling_e"


def test_wrong_registrations_fail_loudly(scratch_methods):
    from bench.method import Method, register

    with pytest.raises(TypeError, match="set `name"):
        @register
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
        METHODS.register(3)
    with pytest.raises(ValueError, match="registered twice"):
        @register
        class Twin(Method):
            name = "uniform"
