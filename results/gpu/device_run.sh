#!/usr/bin/env bash
# The first GPU run: the suite gpu_first (results/suites/gpu_first.yaml) on a lent GPU machine, which
# has no network, from the device kit .devicekit/ that `nox -s devicekit` builds (the wheels the GPU
# image lacks, pinned in results/gpu/requirements-device.txt, and the Fashion-MNIST .gz files).
#
# Call it with the device tool, from the repository root, after `nox -s devicekit`:
#   run(command="bash results/gpu/device_run.sh", carry=[".devicekit"], timeout_s=600)
# It spends at most BENCH_DEVICE_BUDGET seconds (default 480) from its start to the last copy; the
# machine's start and the transfers come on top. `bash results/gpu/device_run.sh SUITE` runs another suite.
# To resume a suite cut short, copy the returned mlflow.db to .devicekit/mlflow.db and call it
# the same way: a store in the kit seeds a machine that has none (finished cells are skipped).
#
# What it reports, in $OUT (what the device tool brings back):
#   run.log         everything it printed: the store check, nvidia-smi's GPU line, one line per cell,
#                   the suite's end, the reference loop's JSON line
#   summary.md      `python3 -m bench tables SUITE`: the table, with a verdict line per method
#   summary.csv     the same rows as CSV
#   runs.csv        one row per run (cells and controls): times, work counts, accuracies
#   plots.tar       the tables' PNG plots (accuracy_vs_time.png, accuracy_vs_work.png,
#                   speedup_vs_realized_drop.png, stage_breakdown.png), one file: the tool brings back 8 at most
#   mlflow.db       the MLflow store: every run with its params, metrics and tags (hardware included)
#   reference.json  results/gpu/reference_loop.py, the hand-written loop: per-epoch seconds and test
#                   accuracy (only when the budget left room for it after the tables)
# Exit status: 0 when every step finished; 1 with one line `device_run FAILED: ...` when a step could
# not run; otherwise the suite's own status (124: it ran out of its share of the budget; its finished
# cells are in the tables).
#
# The CPU check (results/gpu/devicekit.py check) runs this script with KIT, KIT_WHEELS, SITE, OUT,
# BENCH_CACHE, BENCH_RESULTS, MLFLOW_TRACKING_URI, RESUME_STORE=, REFERENCE_EPOCHS=0 and BENCH_DEVICE_CPU=1 set.
set -uo pipefail

suite=${1:-gpu_first}
budget=${BENCH_DEVICE_BUDGET:-480}
t0=$(date +%s)
KIT=${KIT:-.devicekit}
KIT_WHEELS=${KIT_WHEELS:-$KIT/wheels}
SITE=${SITE:-/tmp/site}
REFERENCE_EPOCHS=${REFERENCE_EPOCHS:-5}
RESUME_STORE=${RESUME_STORE-$KIT/mlflow.db}
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"

left() { echo $((budget - $(date +%s) + t0)); }
die() { echo "device_run FAILED: $*"; exit 1; }

main() {
    echo "device_run: suite $suite, budget ${budget}s, kit $KIT, python $(command -v python3)"

    # 1. The wheels the image lacks, beside its own packages.
    ls "$KIT_WHEELS"/*.whl >/dev/null 2>&1 ||
        die "no wheels in $KIT_WHEELS: build the kit with 'nox -s devicekit' and carry .devicekit"
    python3 -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE" "$KIT_WHEELS"/*.whl || die "pip could not install $KIT_WHEELS/*.whl into $SITE"
    export PYTHONPATH="$SITE:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
    export BENCH_CACHE=${BENCH_CACHE:-$PWD/.cache}
    export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$PWD/mlflow.db}
    local results=${BENCH_RESULTS:-$PWD/results}
    python3 results/gpu/devicekit.py deps "$SITE"

    # 2. Fashion-MNIST, gunzipped where torchvision's FashionMNIST reads it (as bench/fetch.py does).
    local raw=$BENCH_CACHE/data/FashionMNIST/raw n=0 f b
    mkdir -p "$raw"
    for f in "$KIT"/data/fashion-mnist/*-ubyte.gz; do
        [ -f "$f" ] || continue
        b=$(basename "$f" .gz)
        [ -s "$raw/$b" ] || { gunzip -c "$f" > "$raw/$b.part" && mv "$raw/$b.part" "$raw/$b"; } ||
            die "cannot unpack $f"
        n=$((n + 1))
    done
    [ "$n" = 4 ] ||
        die "the kit holds $n of the 4 Fashion-MNIST files in $KIT/data/fashion-mnist: run 'nox -s devicekit'"
    echo "data ok: Fashion-MNIST in $raw"

    # 3. A store carried in the kit to resume from; the harness imports and the store opens.
    local db=${MLFLOW_TRACKING_URI#sqlite:///}
    if [ -n "$RESUME_STORE" ] && [ -f "$RESUME_STORE" ] && [ "$db" != "$MLFLOW_TRACKING_URI" ] && [ ! -f "$db" ]; then
        cp "$RESUME_STORE" "$db" && echo "store: resuming from $RESUME_STORE"
    fi
    # The harness imports and the SQLite store opens with the kit's mlflow.
    python3 -c '
import importlib, pkgutil, sys
try:
    import alembic, mlflow, sqlalchemy
    import bench, baselines, methods
    for pkg in (bench, methods, baselines):
        for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if m.name not in ("bench.__main__", "bench.mlflow_server"):
                importlib.import_module(m.name)
    from bench import tracking
    tracking.client().search_runs([tracking.experiment_id()], max_results=1)
except Exception as e:
    line = (str(e).strip().splitlines() or [""])[0]
    sys.exit(f"device_run FAILED: the harness or its MLflow store does not load: {type(e).__name__}: {line}")
print(f"store ok: {tracking.tracking_uri()} (mlflow {mlflow.__version__}, SQLAlchemy {sqlalchemy.__version__}, "
      f"alembic {alembic.__version__})")' || exit 1

    # 4. The GPU.
    if [ "${BENCH_DEVICE_CPU:-0}" != 1 ]; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || die "nvidia-smi found no GPU"
        python3 -c 'import sys, torch; torch.cuda.is_available() or sys.exit(
"device_run FAILED: torch " + torch.__version__ + " sees no GPU; gpu_first would run on CPU")' || exit 1
    fi

    # 5. The suite, within the budget, leaving room for the tables and the reference loop.
    local reserve=35 rc=0  # the tables and the copies; the reference loop takes about 25 s more
    [ "$REFERENCE_EPOCHS" -gt 0 ] && reserve=$((reserve + 35))
    local t=$(($(left) - reserve))
    [ "$t" -gt 30 ] || die "only $(left)s of the ${budget}s budget left for the suite"
    echo "suite $suite: ${t}s of the budget ($(left)s left)"
    timeout "$t" python3 -m bench suite "$suite"
    rc=$?
    [ "$rc" = 124 ] &&
        echo "suite $suite: stopped at its ${t}s share of the budget; its finished cells are in the tables"

    # 6. The tables and the store, to $OUT.
    local tt=$(($(left) - 5))
    [ "$tt" -ge 30 ] || tt=30  # the tables come back even past the budget (the call's limit is 600 s)
    timeout "$tt" python3 -m bench tables "$suite" || echo "tables of $suite failed"
    local dir=$results/$suite
    cp "$dir/summary.md" "$dir/summary.csv" "$dir/runs.csv" "$OUT/" 2>/dev/null ||
        echo "no summary.md, summary.csv or runs.csv in $dir"
    (cd "$dir" 2>/dev/null && ls ./*.png >/dev/null 2>&1 && tar -cf "$OUT/plots.tar" ./*.png) || echo "no plots in $dir"
    [ "$db" != "$MLFLOW_TRACKING_URI" ] && cp "$db" "$OUT/mlflow.db"

    # 7. The hand-written reference loop, if the budget still allows.
    if [ "$REFERENCE_EPOCHS" -gt 0 ]; then
        if [ "$(left)" -ge 30 ]; then
            timeout $(($(left) - 5)) python3 results/gpu/reference_loop.py --root "$BENCH_CACHE/data" \
                --epochs "$REFERENCE_EPOCHS" --train-limit 20000 > "$OUT/reference.json" && cat "$OUT/reference.json" ||
                echo "reference loop did not finish in the $(left)s left"
        else
            echo "reference loop skipped: $(left)s of the budget left"
        fi
    fi
    echo "device_run: done in $(($(date +%s) - t0))s; suite exit $rc; in \$OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
    return "$rc"
}

main 2>&1 | tee "$OUT/run.log"
exit "${PIPESTATUS[0]}"
