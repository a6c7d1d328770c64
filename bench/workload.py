"""The fixed workload per kind of data (AlgoPerf's sense: data handling, loss, evaluation),
one frozen record each. The optimizer and its schedule are in bench/optim.py."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    kind: str
    optimizer: str  # the optimizer behind --optimizer auto
    crop_pad_divisor: int = 14  # random crop, reflect-padded by max(1, size // this)
    eval_batch_cpu: int = 256  # evaluation and scoring batch: the larger of this and the training batch
    eval_batch_gpu: int = 1024
    augment_seed_offset: int = 7  # augmentation generator seed = cell seed + this
    probes_per_epoch: int = 4  # validation probes per full (uniform) epoch, for time to target
    probe_samples: int = 1024  # the probes' fixed validation subset: its first this many samples
    meter_batch: int = 0  # the pace meter's reference batch (bench/meter.py); 0: the training batch
    meter_every: float = 100.0  # a pace reading each this many reference steps' worth of train time


IMAGE = Workload("image", "sgd")
# a transformer step is costly on CPU: on its full batch the meter would read a cell once or twice.
# Read twice as often as images: quick's MR cells train for ~550 reference steps, 5 readings at 100,
# and their metered speedups moved by up to 7.5% between two runs (images, ~10 readings: 5.7%)
TEXT = Workload("text", "adamw", meter_batch=4, meter_every=50.0)
WORKLOADS = {"image": IMAGE, "text": TEXT}
