"""Uniform: every sample every epoch, reshuffled each epoch. The reference all speedups divide."""
from bench.method import Method, register


@register
class Uniform(Method):
    name = "uniform"
    uses_drop = False  # no drop knob: runs at drop 0 only
