"""Claims: one cell trains in one place at a time, across drivers and workers.

A claim is an MLflow run in the experiment `<experiment>-claims`, tagged `claim_key` (the
cell's key), `claim_owner` (one id per driver), `lease_until` (unix seconds) and where it
runs (`claim_host`, `claim_pid`). The holder renews the lease every LEASE_SECONDS/4 from a
thread of the process that trains; a holder that dies stops renewing and its claim lapses.

Protocol, write then read, on the one SQL store behind the tracking server:
  1. write my claim (a new run, or renew mine if an earlier attempt of my driver left one:
     that attempt's worker died and Ray retried the task);
  2. read every live claim on the key (run RUNNING, lease not over);
  3. another owner's live claim is there: withdraw mine and report the cell held;
     otherwise the cell is mine.
Why two claimants never both win: if A read before B wrote, B's read comes after A's write
and B sees A's claim; if both wrote before either read, both see both and both back off
(each retries after a random pause, so one of them wins later). It assumes clocks agree to
well within the lease (NTP) and a holder is never cut off from the server for a whole lease.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid

from bench import tracking

LEASE_SECONDS = float(os.environ.get("BENCH_LEASE_SECONDS", "180"))


def new_owner() -> str:
    """One id per driver: its retried tasks re-enter their own claims."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def experiment_id() -> str:
    c, name = tracking.client(), tracking.EXPERIMENT + "-claims"
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name)
    except Exception:  # another driver created it a moment ago
        return c.get_experiment_by_name(name).experiment_id


def claims_on(key: str) -> list:
    """Claim runs on a key that were never released (live or lapsed)."""
    flt = f"tags.claim_key = '{key}' and attributes.status = 'RUNNING'"
    return tracking.client().search_runs([experiment_id()], filter_string=flt, max_results=100)


def _live(run, now: float) -> bool:
    return float(run.data.tags.get("lease_until", 0)) > now


def live_claims(key: str) -> list:
    now = time.time()
    return [r for r in claims_on(key) if _live(r, now)]


class Claim:
    """A held claim: renewed in the background until released."""

    def __init__(self, key: str, owner: str, run_id: str):
        self.key, self.owner, self.run_id = key, owner, run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{key}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 4):
            try:
                tracking.client().set_tag(self.run_id, "lease_until", f"{time.time() + LEASE_SECONDS:.3f}")
            except Exception:  # a missed renewal is retried next period; the lease has slack for three
                pass

    def release(self, status: str = "FINISHED") -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            c = tracking.client()
            c.set_tag(self.run_id, "lease_until", "0")
            c.set_terminated(self.run_id, status)
        except Exception:  # store unreachable: the claim lapses with its lease instead
            pass


def acquire(key: str, owner: str) -> Claim | None:
    """The cell's claim, or None while another owner holds it."""
    c, exp, now = tracking.client(), experiment_id(), time.time()
    tags = {"claim_key": key, "claim_owner": owner, "lease_until": f"{now + LEASE_SECONDS:.3f}",
            "claim_host": socket.gethostname(), "claim_pid": str(os.getpid())}
    mine, lapsed = None, []
    for r in claims_on(key):
        if r.data.tags.get("claim_owner") == owner:
            mine = r.info.run_id
        elif not _live(r, now):
            lapsed.append(r.info.run_id)
    for run_id in lapsed:  # holders that died: their claims no longer count, close them
        c.set_terminated(run_id, "KILLED")
    if mine:
        from mlflow.entities import RunTag

        c.log_batch(mine, tags=[RunTag(k, v) for k, v in tags.items()])
    else:
        mine = c.create_run(exp, tags=tags, run_name=f"claim-{key}").info.run_id
    if any(r.data.tags.get("claim_owner") != owner for r in live_claims(key)):
        c.set_terminated(mine, "KILLED")  # withdraw: the other claimant (or a later retry) takes it
        return None
    return Claim(key, owner, mine)
