"""benchmarks/repeat.py: two runs' tables compared on the clock each table reads (metered where the
meter holds, raw elsewhere), with the raw clock beside it."""
import importlib.util
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("repeat_script", ROOT / "benchmarks" / "repeat.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _table(path, fm_raw, fm_metered, mr_raw):
    nan = float("nan")
    base = {"model": "m", "epochs": 3, "variant": "", "control_of": "", "control_of_variant": "", "control_kind": "",
            "test_acc_mean": 0.8, "notes": ""}
    rows = [
        {**base, "dataset": "fm", "method": "uniform", "drop": 0.0, "train_speedup": 1.0, "metered_speedup": 1.0,
         "speedup_efficiency": 1.0, "metered_efficiency": 1.0},
        {**base, "dataset": "fm", "method": "random_subset", "drop": 0.5, "train_speedup": fm_raw,
         "metered_speedup": fm_metered, "speedup_efficiency": fm_raw / 2, "metered_efficiency": fm_metered / 2},
        {**base, "dataset": "mr", "method": "uniform", "drop": 0.0, "train_speedup": 1.0, "metered_speedup": nan,
         "speedup_efficiency": 1.0, "metered_efficiency": nan},
        {**base, "dataset": "mr", "method": "random_subset", "drop": 0.5, "train_speedup": mr_raw,
         "metered_speedup": nan, "speedup_efficiency": mr_raw / 2, "metered_efficiency": nan},
    ]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_repeat_judges_the_clock_each_table_reads(tmp_path, monkeypatch, capsys):
    repeat = _load()
    a, b, out = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "repeat.md"
    _table(a, fm_raw=2.0, fm_metered=2.0, mr_raw=2.0)
    _table(b, fm_raw=2.3, fm_metered=2.04, mr_raw=2.06)  # raw moved 15% on fm; the clocks read moved 2% and 3%
    monkeypatch.setattr(sys, "argv", ["repeat.py", str(a), str(b), "--out", str(out)])
    assert repeat.main() == 0
    text = out.read_text()
    raw = next(ln for ln in text.splitlines() if "train speedup (raw" in ln)
    read = next(ln for ln in text.splitlines() if "speedup the table reads" in ln)
    assert "+15.0%" in raw and "rows within 5%: 1 of 2" in raw
    assert "+3.0%" in read and "rows within 5%: 2 of 2" in read  # mr's raw clock stands in where it has no metered one
    assert "rows with a read efficiency above 1.05 in either run: 0" in text  # fm's raw 1.15 is not the one judged
    assert "random_subset" in text and "| speedup read 1 |" in text


def test_a_row_above_1_05_in_the_second_run_is_flagged_by_that_runs_notes(tmp_path, monkeypatch):
    repeat = _load()
    a, b, out = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "repeat.md"
    _table(a, fm_raw=2.0, fm_metered=2.0, mr_raw=2.0)
    _table(b, fm_raw=2.0, fm_metered=2.2, mr_raw=2.0)  # metered efficiency 1.10 in run 2 only
    t = pd.read_csv(b, dtype={"notes": str})
    t.loc[t["dataset"] == "fm", "notes"] = "metered speedup efficiency 1.10 > 1.05: a measurement problem"
    t.to_csv(b, index=False)
    monkeypatch.setattr(sys, "argv", ["repeat.py", str(a), str(b), "--out", str(out)])
    assert repeat.main() == 0
    assert "(1.00 / 1.10, flagged: yes)" in out.read_text()
    t["notes"] = ""
    t.to_csv(b, index=False)
    assert repeat.main() == 0
    assert "(1.00 / 1.10, flagged: no)" in out.read_text()
