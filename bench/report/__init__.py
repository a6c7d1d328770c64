"""Tables and plots of a suite, read back from MLflow (never from the memory of a run).

    collect(suite)             one row per finished run of the suite's cells (newest per cell and hardware)
    summary(runs, suite)       one row per hardware x setting x method x variant x drop; columns from METRICS
    render(summary, highlight) the markdown table as text; `highlight` marks one method's rows
    write(suite, out_dir)      results/<suite>/summary.md, summary.csv, runs.csv and the PLOTS

By job: store (MLflow -> DataFrame), stats (t intervals, seed pairs, Holm, time to target),
metrics + columns (every summary column, defined once), summary (rows), verdicts (each
row against its controls, the frontier), table (markdown, csv), plots. A new column is one `register_metric(Metric(...))` in
columns.py; a new plot is one `@register_plot` function in plots.py.

Paper figures file (the suite's `paper:` entry, a YAML path relative to results/):

    source: "SwiftLearn, arXiv 2311.15134"     # optional, shown in the header
    figures:
      - method: swiftlearn        # required: the registered method name
        metric: e2e_speedup       # required: what the figure is (a summary column name, or free text)
        value: 3.36               # required: number or text
        drop: 0.9                 # optional: only rows at this drop (default: every drop of the method)
        model: bert_base          # optional: only rows of this model
        dataset: glue             # optional: only rows of this dataset
        note: BERT GLUE avg       # optional
    targets:                      # optional: the paper's own time-to-target accuracy
      - {val_acc: 64.0, model: bert_base, dataset: wiki, note: "MLM accuracy"}   # percent; model, dataset optional

Each row shows its matching figures in the column `paper`, as "e2e_speedup 3.36 (BERT GLUE avg)",
several joined by "; ". A figure whose filters match no row of ours is not shown in the table.
"""
from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError
from bench.paths import results_dir
from bench.report import columns as _columns  # noqa: F401  (fills METRICS)
from bench.report.metrics import METRICS, Metric, register_metric, run_metric_names, summary_columns
from bench.report.plots import PLOTS, register_plot
from bench.report.stats import t_interval, time_to_target
from bench.report.store import HISTORY_COLUMNS, collect, diverged
from bench.report.summary import GROUP
from bench.report.summary import summary as _summary
from bench.report.table import markdown, render, write_csv
from bench.report.verdicts import add_verdicts

__all__ = ["collect", "summary", "render", "write", "t_interval", "time_to_target", "METRICS", "Metric",
           "register_metric", "PLOTS", "register_plot", "run_metric_names", "summary_columns", "GROUP"]


def summary(runs, suite):
    """The summary table (bench/report/summary.py) with each method row's verdicts (bench/report/verdicts.py)."""
    return add_verdicts(_summary(runs, suite))


def write(suite, out_dir: str | Path | None = None) -> Path:
    """summary.md, summary.csv, runs.csv and the plots under results/<suite>/; returns that folder."""
    runs = collect(suite)
    if runs.empty:
        raise BenchError(f"no finished runs for suite {suite.name}; run `nox -s reproduce -- {suite.name}` first")
    s = summary(runs, suite)
    out = Path(out_dir) if out_dir is not None else results_dir() / suite.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(markdown(suite, runs, s, diverged(suite)), encoding="utf-8")
    write_csv(s, out / "summary.csv")
    write_csv(runs.drop(columns=list(HISTORY_COLUMNS)), out / "runs.csv")
    for name, draw in PLOTS.items():
        draw(runs, s, out / f"{name}.png")
    return out
