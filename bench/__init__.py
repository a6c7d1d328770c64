"""bench: the reference harness for data-efficient training methods."""
