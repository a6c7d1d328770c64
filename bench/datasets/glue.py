"""GLUE tasks from the Hugging Face hub (online users only), one registered name per task."""
from __future__ import annotations

from typing import Callable

import torch

from bench.data import RawData, register_dataset
from bench.errors import BenchError
from bench.paths import data_dir

GLUE_TASKS = {  # task: (text fields, classes, evaluation split)
    "sst2": (("sentence",), 2, "validation"),
    "cola": (("sentence",), 2, "validation"),
    "mrpc": (("sentence1", "sentence2"), 2, "validation"),
    "qqp": (("question1", "question2"), 2, "validation"),
    "qnli": (("question", "sentence"), 2, "validation"),
    "rte": (("sentence1", "sentence2"), 2, "validation"),
    "mnli": (("premise", "hypothesis"), 3, "validation_matched"),
}


def _glue(task: str) -> Callable[[], RawData]:
    fields, classes, eval_split = GLUE_TASKS[task]

    def load() -> RawData:
        """GLUE from the Hugging Face hub; its labelled validation split serves as test."""
        try:
            import datasets

            ds = datasets.load_dataset("nyu-mll/glue", task, cache_dir=str(data_dir() / "hf"))
        except Exception as e:
            raise BenchError(
                f"could not load GLUE {task} from the Hugging Face hub ({type(e).__name__}); it needs the network. "
                "Offline, use the mr sentences"
            ) from None

        def texts(split):
            cols = [split[f] for f in fields]
            return list(cols[0]) if len(cols) == 1 else list(zip(*cols))

        tr, te = ds["train"], ds[eval_split]
        return RawData("text", classes, texts(tr), torch.tensor(tr["label"]), texts(te), torch.tensor(te["label"]))

    return load


for _task in GLUE_TASKS:
    register_dataset(f"glue_{_task}")(_glue(_task))
