"""CPU regression guard: `python -m bench regress [--update] [--suite NAME]`.

Runs a small fixed suite (results/suites/regress.yaml) and compares each method with the
committed baseline of this machine's CPU model, results/regress/baselines/<cpu>.json. The rules:

- Every cell trains fresh into a temporary MLflow store and checkpoint folder, so
  finished-cell skipping can never hide a regression and the user's store is never touched.
- Time is CPU time of the training thread (`time.thread_time()`), with one torch thread, so
  all of a cell's work runs in that thread and time spent descheduled is not counted.
  Cache and memory-bandwidth interference from other processes still is.
- Each method trains `guard_rounds` times (the baseline's; at most `ROUNDS`, as many as fit
  the time budget on that CPU), each run between two runs of the uniform reference;
  medians over rounds are compared.
- Checks per method (bench/regress/compare.py): realized work exactly; train_cost (its own
  work per unit of training step, from one run); speedup over uniform; accuracy change.
- Timing tolerances are per method, derived from the rounds' spread when the baseline is
  written, and stored in it (bench/regress/baseline.py).
- A method failing a timing check is measured again; the better measurement counts.
- A method missing from the baseline is reported and does not fail; one in the baseline that
  is gone or crashed fails. `--update` rewrites the baseline on purpose.

Modules: runs (one training run), measure (the rounds), compare (the checks), baseline
(the file and tolerances), report (printing), guard (the entry point), inject (CPU work put
into a method, for tests and calibration), calibrate (the guard's sensitivity and false alarms).
"""
from bench.regress.guard import main

__all__ = ["main"]
