"""User-facing errors: one line saying what is wrong and how to fix it."""


class BenchError(Exception):
    """Bad input or a missing resource. The CLI prints the message alone and exits 2."""


class StoreError(BenchError):
    """The MLflow store cannot be reached or written: one line naming the URI and the fix."""


class Diverged(Exception):
    """Training produced a non-finite loss or weights: the cell stops and is recorded as diverged."""

    def __init__(self, epoch: int, step: int, what: str):
        self.epoch, self.step, self.what = epoch, step, what
        super().__init__(f"{what} at epoch {epoch}, optimizer step {step}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C: finished epochs stay checkpointed, the run is marked killed."""
