"""User-facing errors: one line saying what is wrong and how to fix it."""


class BenchError(Exception):
    """Bad input or a missing resource. The CLI prints the message alone and exits 2."""
