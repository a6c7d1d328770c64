"""The README's examples stay correct: its "Adding a method" file is a method the harness runs."""
import re
from pathlib import Path

import pytest

from bench import hooks
from bench.registry import METHODS
from conftest import tiny_cell

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_adding_a_method_example_registers_and_runs(store):
    from bench.cell import run_cell

    list(METHODS.names())
    saved = dict(METHODS._entries)
    try:
        exec(compile(_block("## Adding a method"), "README:loss_greedy", "exec"), {"__name__": "readme_example"})
        cls = METHODS.get("loss_greedy")
        assert "warmup_epochs" in hooks.declared(cls)
        with pytest.raises(Exception, match="drop ratio > 0"):
            tiny_cell(method="loss_greedy", drop=0.0, epochs=2).build_method()
        res = run_cell(tiny_cell(method="loss_greedy", drop=0.5, epochs=2), log=lambda *_: None)
        m = res.metrics
        assert res.status == "finished" and m["total_selection_forwards"] > 0
        assert m["backward_fraction"] == pytest.approx(0.75, abs=0.01)  # epoch 0 full, epoch 1 half
    finally:
        METHODS._entries.clear()
        METHODS._entries.update(saved)
