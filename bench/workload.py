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


IMAGE = Workload("image", "sgd")
TEXT = Workload("text", "adamw")
WORKLOADS = {"image": IMAGE, "text": TEXT}
