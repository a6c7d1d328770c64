#!/usr/bin/env bash
# How results/gpu/ figures were measured on a lent GPU machine (no network there):
# the working tree travels with .whl/ (mlflow-skinny and its pure deps, cp312 wheels)
# and .devdata/fmnist/ (the Fashion-MNIST .gz files of Debian's dataset-fashion-mnist).
#   bash results/gpu/device_run.sh SUITE [reference] [first-method]
# An mlflow.db carried in from an earlier call is reused: finished cells are skipped.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
raw=.cache/data/FashionMNIST/raw; mkdir -p "$raw"
for f in .devdata/fmnist/*.gz; do b=$(basename "$f" .gz); [ -f "$raw/$b" ] || gunzip -c "$f" > "$raw/$b"; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
budget=${BENCH_DEVICE_BUDGET:-480}; t0=$(date +%s)
if [ "${2:-}" = reference ]; then python3 results/gpu/reference_loop.py --root .cache/data --epochs 10 | tee "$OUT/reference.json"; fi
if [ -n "${3:-}" ]; then timeout $((budget - $(date +%s) + t0)) python3 -m bench compare "$3" "$1"; fi
left=$((budget - $(date +%s) + t0)); [ $left -gt 30 ] && timeout $left python3 -m bench suite "$1"
cp mlflow.db "$OUT/mlflow.db"
python3 -m bench tables "$1" && cp results/"$1"/summary.md results/"$1"/*.png "$OUT/" 2>/dev/null
true
