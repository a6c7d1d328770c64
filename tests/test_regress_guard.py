"""The regression guard end to end on a tiny two-method suite: --update writes a baseline with
per-method tolerances; the unchanged tree passes; CPU work injected into random_subset (a busy
loop in its per-step hook, ~10% and ~30% of its training cost) fails the guard, on that
method's timing and nothing else."""
import json

import pytest

from bench.regress import guard
from bench.regress.inject import inject_cpu_work, per_step_seconds_now
from bench.suite import load_suite

pytestmark = pytest.mark.serial  # its pass/fail reads CPU time, so it runs alone
ROUNDS = 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny suite and its baseline, written once for the module by --update."""
    root = tmp_path_factory.mktemp("regress")
    suite = root / "regress_tiny.yaml"
    suite.write_text(
        "name: regress_tiny\n"
        "defaults: {epochs: 2, batch_size: 64, train_limit: 512, eval_limit: 128, device: cpu, progress: false}\n"
        "blocks:\n"
        "  - {models: [tiny_cnn], datasets: [fashion_mnist], methods: [uniform, random_subset], drops: [0.5], seeds: [0]}\n"
    )
    path = root / "baseline.json"
    assert guard.main(update=True, suite_name=str(suite), baseline_file=path, log=lambda *a: None, rounds=ROUNDS + 1) == 0
    return suite, path


def _guard(tiny, capsys) -> tuple[int, str]:
    suite, path = tiny
    capsys.readouterr()
    rc = guard.main(suite_name=str(suite), baseline_file=path, rounds=ROUNDS)
    return rc, capsys.readouterr().out


def test_update_writes_baseline_with_provenance_and_per_method_tolerances(tiny):
    base = json.loads(tiny[1].read_text())
    assert set(base["methods"]) == {"uniform", "random_subset"}
    rs = base["methods"]["random_subset"]
    assert rs["backward_fraction"] == pytest.approx(0.5, abs=0.01) and base["methods"]["uniform"]["backward_fraction"] == 1.0
    assert len(rs["samples"]["train_cost"]) == len(rs["samples"]["speedup"]) == ROUNDS + 1
    assert rs["train_cost"] >= 1.0 and rs["speedup"] > 1.2  # half the steps, little selection work
    per = base["tolerances"]["per_method"]
    assert set(per["random_subset"]) == {"train_cost", "speedup"} and set(per["uniform"]) == {"train_cost"}
    for k in ("hardware", "torch", "created", "git_commit", "cpu", "rounds"):
        assert base[k]


def test_unchanged_tree_passes(tiny, capsys, store):
    rc, out = _guard(tiny, capsys)
    assert rc == 0, out
    assert "regress: PASS" in out and "detectable slowdown: random_subset" in out
    assert not (store / "mlflow.db").exists()  # the guard trains into its own temporary store


@pytest.mark.parametrize("share", [0.10, 0.30])
def test_injected_cpu_work_fails_on_that_method(tiny, capsys, share):
    per_step = per_step_seconds_now(load_suite(str(tiny[0])), "random_subset", share)
    with inject_cpu_work("random_subset", per_step):
        rc, out = _guard(tiny, capsys)
    assert rc == 1, out
    cost = next(ln for ln in out.splitlines() if ln.startswith("random_subset") and " train_cost " in ln)
    assert "FAIL: slower" in cost
    rise = float(cost.split()[4].rstrip("%")) / 100
    assert rise >= 0.5 * share  # the check sees the injected work (CPU seconds per unit of work drift with load)
    assert "re-measuring random_subset" in out  # failed twice before it counts
    others = [ln for ln in out.splitlines() if ln.startswith(("uniform", "random_subset"))
              and any(f" {m} " in ln for m in ("backward_fraction", "total_steps", "acc_delta_points"))]
    assert len(others) == 5 and all(" ok" in ln for ln in others)  # same work, same accuracy: only time fails
    # the injection is gone after the block: the method's hook is its own again
    from bench.method import Method
    from bench.registry import METHODS

    assert METHODS.get("random_subset").observe is Method.observe
