"""Two runs of one suite on one machine, compared row by row: does the clock repeat?

    python benchmarks/repeat.py results/quick/summary.csv OTHER/summary.csv --out results/quick/repeat.md

For every row present in both (setting, method, variant, control, drop): its train speedup in each
run and the relative change, its test accuracy in each, the random subset's speedup efficiency
(the clock check), and every row's speedup efficiency above 1.05 (flagged or not). A measurement
script, not a test: it reads the tables two `nox -s reproduce` runs wrote.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

KEY = ["model", "dataset", "epochs", "method", "variant", "control_of", "control_of_variant", "control_kind", "drop"]
CLOCKS = {"train_speedup": "train speedup (raw thread time)", "metered_speedup": "metered speedup (bench/meter.py)",
          "read_speedup": "speedup the table reads (metered where the meter holds, else raw)"}


SHORT = {"train_speedup": "raw speedup", "metered_speedup": "metered speedup", "read_speedup": "speedup read"}


def _read_clock(t: pd.DataFrame) -> pd.DataFrame:
    """The speedup and efficiency each row's table judges: metered where the report gives one, else raw."""
    t = t.copy()
    if "metered_speedup" in t:
        t["read_speedup"] = t["metered_speedup"].fillna(t["train_speedup"])
    if "metered_efficiency" in t:
        t["read_efficiency"] = t["metered_efficiency"].fillna(t["speedup_efficiency"])
    return t


def _flagged(r: dict, eff: str) -> bool:
    """Each run in which the row's efficiency is above 1.05 says so in its own notes."""
    return all("measurement problem" in str(r[f"notes_{i}"]) for i in (1, 2) if r[f"{eff}_{i}"] > 1.05)


def compare(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    a, b = _read_clock(a), _read_clock(b)
    cols = [c for c in CLOCKS if c in a and c in b] + ["test_acc_mean", "speedup_efficiency", "notes"] + [
        c for c in ("metered_efficiency", "read_efficiency") if c in a and c in b]
    m = a[KEY + cols].merge(b[KEY + cols], on=KEY, suffixes=("_1", "_2"))
    for c in CLOCKS:
        if f"{c}_1" in m:
            m[f"{c}_change"] = m[f"{c}_2"] / m[f"{c}_1"] - 1
    m["acc_change_pts"] = 100 * (m["test_acc_mean_2"] - m["test_acc_mean_1"])
    return m


def _clock_line(rows: pd.DataFrame, col: str, what: str) -> str:
    ch = rows[f"{col}_change"].dropna()
    if ch.empty:
        return f"- {what}: not logged in both runs"
    w = rows.loc[ch.abs().idxmax()]
    return (f"- largest change of a row's {what}: {100 * w[f'{col}_change']:+.1f}% ({w['method']} "
            f"{w['control_kind'] or ''} {w['control_of'] or ''} {w['model']}/{w['dataset']}: {w[f'{col}_1']:.3f}x then "
            f"{w[f'{col}_2']:.3f}x); rows within 5%: {int((ch.abs() <= 0.05).sum())} of {len(ch)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first")
    ap.add_argument("second")
    ap.add_argument("--out", required=True)
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    text = ["method", "variant", "control_of", "control_of_variant", "control_kind", "notes"]
    read = lambda p: pd.read_csv(p, keep_default_na=False, na_values=[""], dtype={c: str for c in text}).fillna(  # noqa: E731
        {c: "" for c in text})
    m = compare(read(a.first), read(a.second))
    rows = m[m["method"] != "uniform"].copy()
    clocks = [c for c in CLOCKS if f"{c}_change" in rows]
    shown = [c for c in clocks if c != "metered_speedup"] if "read_speedup" in clocks else clocks  # the table: raw, read
    rs = m[(m["method"] == "random_subset") & (m["control_of"].fillna("") == "")]
    # the efficiency a table judges: the metered one where the meter holds (bench/meter.py), else raw
    eff = "read_efficiency" if "read_efficiency_1" in m else "speedup_efficiency"
    high = m[(m[f"{eff}_1"] > 1.05) | (m[f"{eff}_2"] > 1.05)]
    lines = [
        "# Two runs of the suite on one machine", "",
        f"{a.note}".strip(), "",
        f"- rows compared: {len(rows)} (every row but uniform, the reference: its speedup is 1 by definition)",
        *[_clock_line(rows, c, CLOCKS[c]) for c in clocks],
        "- the random subset's speedup against its ideal (the clock check), per run: " + "; ".join(
            f"{r.model}/{r.dataset} drop {r.drop:g}: {r.speedup_efficiency_1:.3f} then {r.speedup_efficiency_2:.3f}"
            + (f" (metered: {r.metered_efficiency_1:.3f} then {r.metered_efficiency_2:.3f})"
               if "metered_efficiency_1" in m and not pd.isna(r.metered_efficiency_1) else "") for r in rs.itertuples()),
        f"- rows with a {eff.replace('_', ' ')} above 1.05 in either run: {len(high)}"
        + ("".join(f"; {r['method']} {r['control_kind'] or ''} ({r[f'{eff}_1']:.2f} / {r[f'{eff}_2']:.2f}, "
                   f"flagged: {'yes' if _flagged(r, eff) else 'no'})"
                   for r in high.to_dict("records"))),
        f"- largest change of a row's mean test accuracy: {rows['acc_change_pts'].abs().max():.2f} points", "",
        "| model | dataset | method | control | drop | " + " | ".join(
            f"{SHORT[c]} {i}" for c in shown for i in (1, 2, "change")) + " | test acc 1 | test acc 2 |",
        "|---|---|---|---|---:|" + "---:|" * (3 * len(shown) + 2),
    ]
    for r in rows.sort_values(KEY).to_dict("records"):
        ctl = f"{r['control_kind']} [{r['control_of']}]" if r["control_of"] else ""
        cells = "".join(f" {r[f'{c}_1']:.3f} | {r[f'{c}_2']:.3f} | {100 * r[f'{c}_change']:+.1f}% |" for c in shown)
        lines.append(f"| {r['model']} | {r['dataset']} | {r['method']} {r['variant'] or ''} | {ctl} | {r['drop']:g} |"
                     f"{cells} {100 * r['test_acc_mean_1']:.2f} | {100 * r['test_acc_mean_2']:.2f} |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:10]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
