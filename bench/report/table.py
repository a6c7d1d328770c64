"""summary.md (header, legend, table) and the csv files."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.controls import CONTROL
from bench.report import stats
from bench.report import verdicts as verdicts_mod
from bench.report.columns import FAR_OFFSET, TARGETS, method_faithfulness
from bench.report.metrics import METRICS, Metric, nan
from bench.report.summary import panel_labels, row_name
from bench.suite import REFERENCE

CLOCK_TOLERANCE = 0.05  # the random subset's train speedup must be within 5% of its ideal

LEFT = {"faithful", "notes", "paper"}


def _present(m: Metric, s: pd.DataFrame) -> bool:
    if not m.table:
        return False
    if not m.optional:
        return True
    col = s[m.name] if m.name in s else pd.Series(dtype=object)
    return any(not nan(v) and v != "" for v in col)


def shown(s: pd.DataFrame) -> list[Metric]:
    return [m for m in METRICS if _present(m, s)]


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(df: pd.DataFrame, highlight: str | None = None) -> str:
    """The summary as a markdown table; rows of method `highlight` are marked with ▶ and bold."""
    s = df
    if s.empty:
        return "(no finished runs)\n"
    ident = [("hardware", "hardware", s["hardware"].nunique() > 1, lambda r: r["hardware"]),
             ("model", "model", True, lambda r: r["model"]), ("dataset", "dataset", True, lambda r: r["dataset"]),
             ("noise", "label_noise", bool((s["label_noise"] != 0).any()), lambda r: f"{r['label_noise']:g}"),
             ("epochs", "epochs", s["epochs"].nunique() > 1, lambda r: str(int(r["epochs"])))]
    ident = [(h, f) for h, _, show, f in ident if show]
    metrics = shown(s)
    variants = s.groupby("method")["variant"].nunique()
    head = [h for h, _ in ident] + ["method", "drop"] + [m.header for m in metrics]
    align = ["---"] * (len(ident) + 1) + ["---:"] + ["---" if m.name in LEFT else "---:" for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for _, r in s.iterrows():
        name = row_name(r, variants[r["method"]] > 1)
        if highlight and r["method"] == highlight:
            name = f"▶ **{name}**"
        drop = f"{r['drop']:g}" if not r["control_of"] else f"{1 - r['backward_fraction']:.2f} realized"
        cells = [f(r) for _, f in ident] + [name, drop] + [m.cell(r) for m in metrics]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def legend(s: pd.DataFrame) -> str:
    lines = ["Columns:", ""] + [f"- **{m.header}**: {m.legend}" for m in shown(s)]
    return "\n".join(lines) + "\n\n"


def _unfaithful(runs: pd.DataFrame, s: pd.DataFrame, labels) -> str:
    """Every row whose method is not implemented as its paper says, grouped by caveat."""
    by_caveat: dict[tuple[str, str], list[str]] = {}
    for _, r in s[~s["faithful"].astype(bool)].iterrows():
        g = runs[(runs["hardware"] == r["hardware"]) & (runs["setting"] == r["setting"])
                 & (runs["method"] == r["method"]) & (runs["variant"] == r["variant"]) & (runs["drop"] == r["drop"])]
        faithful, caveat = method_faithfulness(r["method"], g)
        if faithful and g["faithful"].all():
            caveat = ""
        elif faithful:
            caveat = "marked not faithful when it ran"
        rows = by_caveat.setdefault((row_name(r, True), caveat), [])
        rows.append(f"{labels[(r['hardware'], r['setting'])]} drop {r['drop']:g}")
    if not by_caveat:
        return "none"
    return "; ".join(f"{name} ({', '.join(rows)})" + (f": {cav}" if cav else "")
                     for (name, cav), rows in by_caveat.items())


def _runs_line(suite, runs: pd.DataFrame) -> str:
    declared = {c.config_key() for c in suite.cells()}
    own = runs[runs["control_of"].fillna("") == ""]
    done = own["config_key"].isin(declared)
    ctl = runs.drop(own.index)
    # a control cell shared by several rows (equal plans or budgets) counts once; one that is also a suite cell
    # (a random subset the suite runs itself) is the suite's, not added
    added = ctl[~ctl["config_key"].isin(declared)]
    kinds = {k: added[added["control_kind"] == k]["run_id"].nunique() for k in ("selection", "cost")}
    return (f"- runs: {int(done.sum())} of the suite's {len(declared)} cells finished, plus "
            f"{added['run_id'].nunique()} control runs the harness added ({kinds['selection']} selection, "
            f"{kinds['cost']} cost; a control shared by several rows counts once)")


def _commits_line(runs: pd.DataFrame) -> str | None:
    """A warning when the runs come from commits that differ in harness or method code."""
    commits = sorted(c for c in runs["git_commit"].unique())
    if len(commits) < 2:
        return None
    import subprocess

    from bench.paths import PROJECT_ROOT

    plain = sorted({c.replace("-dirty", "") for c in commits})
    changed = set()
    from bench.cell import RUN_CODE

    for a, b in zip(plain, plain[1:]):
        out = subprocess.run(["git", "diff", "--name-only", a, b, "--", *RUN_CODE],
                             cwd=PROJECT_ROOT, capture_output=True, text=True)
        if out.returncode:
            return (f"**Warning: these runs come from {len(commits)} commits ({', '.join(commits)}) that could not be "
                    "compared here; their harness or method code may differ.**")
        changed |= set(out.stdout.split())
    dirty = [c for c in commits if c.endswith("-dirty")]
    if changed or dirty:
        what = f"{len(changed)} harness or method file(s) changed between them" if changed else ""
        what += ("; " if what and dirty else "") + (f"{len(dirty)} ran from a modified tree" if dirty else "")
        return f"**Warning: these runs come from {len(commits)} commits ({', '.join(commits)}): {what}.**"
    return None


# the clock a table reads: the metered speedup where the report gives one (where the meter holds:
# bench/report/metrics.py), else the raw train speedup
SPEEDUP_READ = "metered_speedup"


def _clock_lines(s: pd.DataFrame, labels) -> list[str]:
    """The harness's own check on its clock: a random subset trains at its ideal speedup. Judged on the
    metered speedup where the runs have one (bench/meter.py), with the raw one beside it."""
    out = []
    rows = s[(s["method"] == CONTROL) & (s["control_of"].fillna("") == "")]
    for r in rows.itertuples():
        raw, metered = r.speedup_efficiency, getattr(r, "metered_efficiency", float("nan"))
        eff = raw if nan(metered) else metered
        if nan(eff):
            continue
        name = f"{labels[(r.hardware, r.setting)]} drop {r.drop:g}"
        kind, raw_note = ("train speedup", "") if nan(metered) else ("metered speedup", f" (raw: {raw:.2f}×)")
        if abs(eff - 1) > CLOCK_TOLERANCE:
            out.append(f"**clock disturbed**: {name}: the random subset's {kind} is {eff:.2f}× its ideal "
                       f"({100 * (eff - 1):+.0f}%; tolerance ±{100 * CLOCK_TOLERANCE:.0f}%): speedups in this setting "
                       f"are off by about that much{raw_note}")
        else:
            out.append(f"clock check: {name}: random subset's {kind}{raw_note} at {eff:.2f}× its ideal (within "
                       f"±{100 * CLOCK_TOLERANCE:.0f}%)")
    return out


def header(suite, runs: pd.DataFrame, s: pd.DataFrame, diverged: pd.DataFrame) -> str:
    lines = [f"# Suite {suite.name}", ""]
    warn = _commits_line(runs)
    if warn:
        lines += [warn, ""]
    if suite.description:
        lines += [str(suite.description).strip(), ""]
    labels = panel_labels(runs)
    clocks = sorted(runs["clock"].dropna().unique()) if "clock" in runs else []
    lines += [
        f"- hardware: {'; '.join(sorted(runs['hardware'].unique()))}" + (f"; clock: {', '.join(clocks)}" if clocks else ""),
        _runs_line(suite, runs),
        f"- git commits: {', '.join(sorted(runs['git_commit'].unique()))}",
        f"- intervals: {stats.INTERVAL} (speedups: of the log ratios, shown as a geometric mean); comparisons pair "
        "runs by seed within one setting and hardware; uniform, the reference, runs once at drop 0",
        f"- verdicts: {verdicts_mod.RULE}; {s.attrs.get('comparisons', 0)} comparisons in this table",
    ]
    lines += [f"- {x}" for x in _clock_lines(s, labels)]
    tg = []
    for r in s.drop_duplicates(["hardware", "setting"]).itertuples():
        parts = [f"{t} {100 * getattr(r, f'ttt_{t}_target'):.2f}%" for t in TARGETS
                 if not nan(getattr(r, f"ttt_{t}_target"))]
        if parts:
            tg.append(f"{labels[(r.hardware, r.setting)]}: {', '.join(parts)}")
    if tg:
        lines.append(f"- time-to-target targets (validation accuracy; near = uniform's median final minus "
                     f"{suite.target_offset:g} points, far = minus {FAR_OFFSET:g} points): {'; '.join(tg)}")
    if len(diverged):
        lines.append("- diverged (no result, not in the table): " + "; ".join(
            f"{d.label} [{d.hardware}] at epoch {d.epoch}, step {d.step}" for d in diverged.itertuples()))
    else:
        lines.append("- diverged: none")
    lines.append(f"- not faithful to their papers: {_unfaithful(runs, s, labels)}")
    refused = suite.skipped() if hasattr(suite, "skipped") else []
    if refused:
        lines.append("- not run (`methods: all`, the method refuses the cell): " + "; ".join(
            f"{label}: {why}" for label, why in refused))
    if (suite.paper or {}).get("source"):
        lines.append(f"- paper figures: {suite.paper['source']}")
    return "\n".join(lines) + "\n\n"


def _short(r, col: str) -> str:
    """'+0.99 ±0.29 5/5' (mean, half-width of the t interval, seeds ahead), for the headline."""
    v = r.get(col)
    if nan(v):
        return "–"
    n = int(r.get(f"{col}_n", 0) or 0)
    if n < 2:
        return f"{v:+.2f} (1)"
    return f"{v:+.2f} ±{(r[f'{col}_ci_high'] - r[f'{col}_ci_low']) / 2:.2f} {int(r[f'{col}_ahead'])}/{n}"


def headline(s: pd.DataFrame) -> str:
    """One row per method and setting: what a reader came for, in 100 columns."""
    rows = s[s.apply(verdicts_mod.is_method_row, axis=1)] if len(s) else s
    if rows.empty:
        return ""
    labels = panel_labels(s)
    out = ["## Headline", "",
           "Δ: test accuracy minus the control's, points, mean ±half-width of the 95% t interval, seeds ahead; "
           "verdict: vs selection control / vs cost control (see the verdict rule above).", ""]
    for (hw, setting), g in rows.groupby(["hardware", "setting"], sort=False):
        # on a CPU shared by two cells the metered speedup (bench/meter.py) is the one that repeats
        sp_col = SPEEDUP_READ if SPEEDUP_READ in g and g[SPEEDUP_READ].notna().all() else "train_speedup"
        out += [f"**{labels[(hw, setting)]}**", "",
                f"| method | drop | n | Δ sel. ctl | Δ cost ctl | {sp_col.replace('_', ' ')} | verdict |",
                "|---|---:|---:|---:|---:|---:|---|"]
        names, tags = _names(g), {}
        for i, r in g.iterrows():
            if len(names[i]) > 24:  # too wide for the headline: a short tag, spelled out under the table
                names[i] = tags.setdefault(names[i], f"{r['method']} [v{len(tags) + 1}]")
            sel, cost = r.get("verdict_selection") or "–", r.get("verdict_cost") or "–"
            if nan(r.get("acc_vs_cost_pts")) and not nan(r.get("acc_vs_selection_pts")):
                cost = "= sel."
            sp = r[sp_col]
            speed = "–" if nan(sp) else f"{sp:.2f}×" + ("" if nan(r[f"{sp_col}_ci_low"]) else
                                                         f" ({r[f'{sp_col}_ci_low']:.2f}–{r[f'{sp_col}_ci_high']:.2f})")
            name = names[i][:24]
            verdict = f"{_brief(sel)}/{_brief(cost)}"
            if "did not train" in str(r.get("notes") or ""):
                verdict = "did not train"
            out.append(f"| {name} | {r['drop']:g} | {int(r['n_seeds'])} | {_short(r, 'acc_vs_selection_pts')} | "
                       f"{_short(r, 'acc_vs_cost_pts')} | {speed} | {verdict} |")
        out += [""] + [f"- {tag}: {full}" for full, tag in tags.items()] + ([""] if tags else [])
    return "\n".join(out) + "\n"


def _names(rows: pd.DataFrame) -> dict:
    """Each row's method name; a method with several variants among these rows carries the parameters
    that tell them apart (those all its rows share, such as a suite-wide preset, are left out)."""
    out = {}
    for (method, _), g in rows.groupby(["method", "drop"], sort=False):
        if len(g) < 2:
            out.update({i: row_name(r) for i, r in g.iterrows()})
            continue
        parts = {i: [p for p in str(r["variant"] or "").split(",") if p] for i, r in g.iterrows()}
        shared = set.intersection(*(set(v) for v in parts.values()))
        for i, v in parts.items():
            rest = ",".join(p for p in v if p not in shared)
            out[i] = f"{method} ({rest})" if rest else method
    return out


def _brief(word: str) -> str:
    return {"lost to": "lost", "undecided (n too small)": "undecided", "no verdict (one seed)": "1 seed",
            "no verdict (did not train)": "–", "no verdict": "–"}.get(word, word)


def verdicts(s: pd.DataFrame) -> str:
    """Per setting, one line per method row: both controls, with the work ratio, and the speedup."""
    rows = s[s.apply(verdicts_mod.is_method_row, axis=1)] if len(s) else s
    if rows.empty:
        return ""
    labels = panel_labels(s)
    out = ["## Verdicts: test accuracy against the two random controls", "", f"Rule: {verdicts_mod.RULE}.", ""]
    for (hw, setting), g in rows.groupby(["hardware", "setting"], sort=False):
        out += [f"**{labels[(hw, setting)]}**", ""]
        names = _names(g)
        for i, r in g.iterrows():
            out.append(f"- {names[i]} drop {r['drop']:g} (n={int(r['n_seeds'])}): {verdict(r)}")
        out.append("")
    return "\n".join(out) + "\n"


def _one(r, kind: str) -> str:
    col = verdicts_mod.KINDS[kind]
    d = r.get(col)
    if nan(d):
        return ""
    n = int(r[f"{col}_n"])
    if n < 2:
        return f"{r[f'verdict_{kind}']} {d:+.2f} pts"
    return (f"**{r[f'verdict_{kind}']}** {d:+.2f} pts ({r[f'{col}_ci_low']:+.2f} to {r[f'{col}_ci_high']:+.2f}; "
            f"{int(r[f'{col}_ahead'])}/{n} seeds ahead; Holm p={r[f'p_holm_{kind}']:.3g})")


def verdict(r) -> str:
    if "did not train" in str(r.get("notes") or ""):
        return f"did not train (test accuracy at chance in some seeds): no verdict; {r['notes']}"
    if r.get("active_share") == 0:
        return "its switch never turned on: the run was random training under another name"
    sel, cost = _one(r, "selection"), _one(r, "cost")
    if not sel and not cost:
        if r.get("backward_fraction", 0) >= 1.0:
            return "never dropped a sample: no control; see Δ acc vs uniform"
        return "no control run (logged before controls existed: re-run the suite)"
    parts = []
    if sel:
        same = int(r.get("selection_is_uniform") or 0)
        which = f" (uniform itself in {same} seed{'s' if same > 1 else ''} whose run kept uniform's plan)" if same else ""
        parts.append(f"selection control{which}: {sel}")
    if cost:
        ratio, uni = r.get("cost_work_ratio"), int(r.get("cost_is_uniform") or 0)
        detail = "; ".join(p for p in (
            "" if nan(ratio) else f"work ratio {ratio:.3f}",
            f"uniform itself in {uni} seed{'s' if uni > 1 else ''} whose work came within 3% of uniform's" if uni else "",
        ) if p)
        parts.append(f"cost control ({detail}): {cost}" if detail else f"cost control: {cost}")
    elif sel:
        parts.append("cost control: the selection control (no passes beyond training)")
    col = SPEEDUP_READ if not nan(r.get(SPEEDUP_READ, float("nan"))) else "train_speedup"
    sp = r.get(col)
    if not nan(sp):
        parts.append(f"{col.replace('_', ' ')} {sp:.2f}×" + ("" if nan(r[f"{col}_ci_low"]) else
                                                          f" ({r[f'{col}_ci_low']:.2f}–{r[f'{col}_ci_high']:.2f})"))
    return "; ".join(parts)


def frontier_section(runs: pd.DataFrame, s: pd.DataFrame) -> str:
    """Suites with several drop ratios: each method point against random's curve at the same work."""
    main = runs[runs["control_of"].fillna("") == ""]
    if main.empty or main.loc[main["method"] == CONTROL, "drop"].nunique() < 2:
        return ""  # random's curve needs two of its own points
    labels = panel_labels(runs)
    parts = []
    for (hw, setting), g in main.groupby(["hardware", "setting"], sort=True):
        f = verdicts_mod.frontier(runs, g)
        if f.empty:
            continue
        parts.append((labels[(hw, setting)], f))
    if not parts:
        return ""
    allf = verdicts_mod.frontier_words(pd.concat([f.assign(panel=p) for p, f in parts], ignore_index=True))
    out = ["## Frontier: each method against the random subset's curve at the same work", "",
           "Random's curve joins its points (work fraction, test accuracy) across its drop ratios and uniform's "
           "(work 1), per seed; a method point is compared with it at the point's own work, paired by seed. "
           f"Verdict rule as above (above/on/below), Holm over the {int(allf['p_holm'].notna().sum())} points; a point "
           "with a seed at chance gets none.", ""]
    for panel, f in allf.groupby("panel", sort=False):
        out += [f"**{panel}**", "", "| method | drop | work frac | test acc % | vs random at that work (pts) | verdict |",
                "|---|---:|---:|---:|---:|---|"]
        for r in f.itertuples():
            name = r.method + (f" ({r.variant})" if r.variant else "")
            diff = "–" if nan(r.diff) else (f"{r.diff:+.2f} ({r.low:+.2f} to {r.high:+.2f}) {r.ahead}/{r.n}"
                                            if r.n > 1 else f"{r.diff:+.2f} (1 seed)")
            extra = f" ({r.outside} seeds outside random's range)" if r.outside else ""
            out.append(f"| {name} | {r.drop:g} | {r.work:.3f} | {r.acc:.2f} | {diff} | {r.verdict}{extra} |")
        out.append("")
    return "\n".join(out) + "\n"


def _alt_settings(suite, settings: set[str]) -> dict[str, str]:
    """Setting -> the setting of its uniform cell with the suite's `early_reference` fields (e.g. {lr: 0.1}):
    the paper's own baseline, run as another setting of the suite."""
    from bench.report.store import setting_of

    alt = getattr(suite, "early_reference", None) or {}
    out = {}
    for c in suite.cells() if alt else []:
        a, b = setting_of(c), setting_of(c.replace(**alt))
        if a != b and b in settings and a in settings:
            out[a] = b
    return out


def early_leads(suite, runs: pd.DataFrame) -> str:
    """Per setting and method: validation accuracy after each of the suite's first `early_epochs`
    epochs minus uniform's, paired by seed, with its t interval; and, where the suite names an
    `early_reference` (the paper's baseline settings), minus that uniform's too."""
    n = int(getattr(suite, "early_epochs", 0) or 0)
    if n <= 0 or runs.empty or "hist_val_acc" not in runs:
        return ""
    main = runs[runs["control_of"].fillna("") == ""] if "control_of" in runs else runs
    labels = panel_labels(main.assign(control_of=""))
    alt_of = _alt_settings(suite, set(main["setting"]))
    alt_name = ", ".join(f"{k} {v}" for k, v in (getattr(suite, "early_reference", None) or {}).items())
    out = [f"## Early epochs: lead over uniform in validation accuracy (points; mean over seeds, {stats.INTERVAL})", ""]

    def at(frame, e):
        return frame.assign(acc=[v[e] if isinstance(v, list) and len(v) > e else float("nan")
                                 for v in frame["hist_val_acc"]])

    def lead(ref, m, e):
        d = stats.difference_estimate(at(ref, e), at(m, e), "acc", 100.0)
        return "n/a" if nan(d.value) else f"{d.value:+.2f} ({d.low:+.2f} to {d.high:+.2f}) {d.ahead}/{d.n}"

    for (hw, setting), g in main.groupby(["hardware", "setting"], sort=True):
        ref = g[g["method"] == REFERENCE]
        if ref.empty or (setting in alt_of.values() and len(g["method"].unique()) == 1):
            continue  # a paper-baseline setting with uniform alone: shown beside the setting it serves
        alt = main[(main["hardware"] == hw) & (main["setting"] == alt_of.get(setting, "")) & (main["method"] == REFERENCE)]
        out += [f"**{labels.get((hw, setting), setting)}**", "",
                "| method | " + " | ".join(f"after epoch {e + 1}" for e in range(n)) + " |",
                "|---|" + "---|" * n]
        for name, frame in (("uniform", ref), (f"uniform at {alt_name} (the paper's baseline)", alt)):
            if len(frame):
                uni = [stats.estimate(at(frame, e)["acc"] * 100) for e in range(n)]
                out.append(f"| {name} (accuracy) | " + " | ".join(f"{u.value:.2f}" for u in uni) + " |")
        for (method, variant, drop), m in g[g["method"] != REFERENCE].groupby(["method", "variant", "drop"]):
            name = method + (f" [{variant}]" if variant else "") + (f" drop {drop:g}" if drop else "")
            out.append(f"| {name} vs uniform | " + " | ".join(lead(ref, m, e) for e in range(n)) + " |")
            if len(alt):
                out.append(f"| {name} vs uniform at {alt_name} | " + " | ".join(lead(alt, m, e) for e in range(n)) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def markdown(suite, runs: pd.DataFrame, s: pd.DataFrame, diverged: pd.DataFrame) -> str:
    return (header(suite, runs, s, diverged) + headline(s) + verdicts(s) + frontier_section(runs, s)
            + early_leads(suite, runs) + "## Full table\n\n" + legend(s) + render(s))


def write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False, float_format="%.6g", lineterminator="\n")
