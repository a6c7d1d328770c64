"""Uniform: every sample every epoch, reshuffled each epoch. The reference all speedups divide."""
from bench.method import Method, register


@register
class Uniform(Method):
    name = "uniform"
    uses_drop = False  # no drop knob: runs at drop 0 only

    def refuse(self, epochs: int) -> str | None:
        if self.drop > 0:
            return f"uniform has no drop ratio; run it at drop 0 (this cell asks for {self.drop})"
        return None
