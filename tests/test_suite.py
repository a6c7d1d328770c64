import pytest

from bench.errors import BenchError
from bench.suite import list_suites, load_suite


@pytest.mark.parametrize("name", list_suites())
def test_shipped_suite_loads_and_validates(name):
    suite = load_suite(name)
    cells = suite.cells()
    assert cells and suite.expected_runtime
    assert len({c.config_key() for c in cells}) == len(cells)
    assert sum(c.method == "uniform" for c in cells) >= 1
    assert all(c.drop == 0.0 for c in cells if c.method == "uniform")


def test_quick_suite_covers_every_method_two_drops_two_seeds():
    from bench.registry import list_methods

    cells = load_suite("quick").cells()
    assert {c.method for c in cells} == set(list_methods())
    for m in set(list_methods()) - {"uniform"}:
        assert len({c.drop for c in cells if c.method == m}) >= 2
    assert len({c.seed for c in cells}) >= 2


def test_methods_all_picks_up_new_plugins(monkeypatch):
    from bench.method import Method
    from bench.registry import METHODS

    class Late(Method):
        name = "late_plugin"

    monkeypatch.setitem(METHODS._entries, "late_plugin", Late)
    assert "late_plugin" in {c.method for c in load_suite("quick").cells()}
    assert {c.method for c in load_suite("quick").cells({"late_plugin"})} == {"late_plugin", "uniform"}


BAD = {
    "yaml": ("name: x\nblocks: [\n", "not valid YAML at line"),
    "key": ("name: x\nblokcs: []\n", "unknown key(s) blokcs"),
    "noblocks": ("name: x\n", "no blocks"),
    "model": ("name: x\nblocks:\n- {models: [nosuch], datasets: [digits], methods: all}\n", "unknown model 'nosuch'"),
    "method": ("name: x\nblocks:\n- {models: [tiny_cnn], datasets: [digits], methods: [nope]}\n", "unknown method 'nope'"),
    "drop": ("name: x\nblocks:\n- {models: [tiny_cnn], datasets: [digits], methods: [uniform, random_subset], drops: [1.5]}\n",
             "outside [0, 1)"),
    "field": ("name: x\ndefaults: {epoch: 3}\nblocks:\n- {models: [tiny_cnn], datasets: [digits], methods: all}\n",
              "unknown cell field(s) epoch"),
    "param": ("name: x\nblocks:\n- {models: [tiny_cnn], datasets: [digits], methods: [{name: uniform, params: {a: 1}}]}\n",
              "no parameter a"),
}


@pytest.mark.parametrize("case", BAD)
def test_broken_suite_is_one_clear_line(case, tmp_path):
    text, expect = BAD[case]
    p = tmp_path / "broken.yaml"
    p.write_text(text)
    with pytest.raises(BenchError) as e:
        load_suite(str(p))
    assert expect in str(e.value) and "\n" not in str(e.value)
