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


def test_quick_suite_runs_every_method_in_every_block_five_seeds():
    from bench.registry import METHODS, list_methods

    suite = load_suite("quick")  # loading refuses any cell in which a method would not act
    cells = suite.cells()
    refused = {label.split("/")[2].split(" ")[0] for label, _ in suite.skipped() if "/mr/" in label}
    assert refused == {"impon"}  # listed as not run, with the reason, in the summary's header
    for block in {(c.model, c.dataset) for c in cells}:
        in_block = [c for c in cells if (c.model, c.dataset) == block]
        assert {c.method for c in in_block} == set(list_methods()) - (refused if block[1] == "mr" else set()), block
        for m in {c.method for c in in_block}:
            drops = {c.drop for c in in_block if c.method == m}
            assert drops == {0.0} if not METHODS.get(m).uses_drop else 0.0 not in drops, (block, m, drops)
    assert len({c.seed for c in cells}) == 5


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
    "override_type": ("name: x\nblocks:\n- {models: [tiny_cnn], datasets: [digits], methods: [uniform], "
                      "overrides: {epochs: abc}}\n", "epochs must be an integer, got 'abc'"),
    "defaults_list": ("name: x\ndefaults: [1, 2]\nblocks:\n- {models: [tiny_cnn], datasets: [digits], methods: [uniform]}\n",
                      "defaults must be a mapping"),
    "target_offset": ("name: x\ntarget_offset: abc\nblocks:\n- {models: [tiny_cnn], datasets: [digits], methods: [uniform]}\n",
                      "target_offset must be a number, got 'abc'"),
    "max_length": ("name: x\ndefaults: {max_length: 0}\nblocks:\n- {models: [tiny_bert], datasets: [mr], methods: [uniform]}\n",
                   "max_length must be at least 2"),
    "lr": ("name: x\ndefaults: {lr: -1}\nblocks:\n- {models: [tiny_cnn], datasets: [digits], methods: [uniform]}\n",
           "learning rate must be positive"),
    "device": ("name: x\ndefaults: {device: gpu0}\nblocks:\n- {models: [tiny_cnn], datasets: [digits], methods: [uniform]}\n",
               "unknown device 'gpu0'"),
}


@pytest.mark.parametrize("case", BAD)
def test_broken_suite_is_one_clear_line(case, tmp_path):
    text, expect = BAD[case]
    p = tmp_path / "broken.yaml"
    p.write_text(text)
    with pytest.raises(BenchError) as e:
        load_suite(str(p))
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_dry_run_validates_the_whole_suite(tmp_path, capsys):
    from bench.cli import main

    p = tmp_path / "broken.yaml"
    p.write_text(BAD["max_length"][0])
    assert main(["suite", str(p), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "max_length must be at least 2" in err


def test_a_suite_path_that_is_a_folder_is_one_line(tmp_path):
    from bench.cli import main

    assert main(["suite", str(tmp_path), "--dry-run"]) == 2
