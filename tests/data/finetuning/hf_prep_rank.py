"""One rank of the two-process test of local-rank-zero-first HF preprocessing.

Run by ``test_hf_rank_zero_first.py`` with the torch.distributed environment variables set:
``python hf_prep_rank.py TOKENIZER_DIR DATA_FILE CACHE_DIR OUT_DIR``. It prepares the same JSONL
file twice, as the ``finetuning`` loader does: first with a preprocessing function that counts
its calls (to see which rank did the work and which read the cache), then with one that fails
on local rank 0 only. It writes what it saw to ``OUT_DIR/rank<N>.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from composer.devices import DeviceCPU
from composer.utils import dist

from llmfoundry.data.finetuning.dataloader import build_hf_finetuning_dataset, parse_dataset_config
from llmfoundry.utils.tokenizer_utils import build_tokenizer

CALLS = {"count": 0}


def counting_fn(row: dict[str, Any]) -> dict[str, Any]:
    """A preprocessing function that counts its calls in this process."""
    CALLS["count"] += 1
    return {"prompt": row["prompt"], "response": row["response"]}


def fails_on_local_rank_zero(row: dict[str, Any]) -> dict[str, Any]:
    """A preprocessing function that fails on local rank 0 only."""
    if os.environ["LOCAL_RANK"] == "0":
        raise ValueError("rank zero cannot read this row")
    return {"prompt": row["prompt"], "response": row["response"]}


def main(tokenizer_dir: str, data_file: str, cache_dir: str, out_dir: str) -> None:
    dist.initialize_dist(DeviceCPU(), timeout=60)
    tokenizer = build_tokenizer(tokenizer_dir)
    section = {
        "hf_name": "json",
        "hf_kwargs": {"data_files": {"train": data_file}, "cache_dir": cache_dir},
        "split": "train",
        "max_seq_len": 32,
        "preprocessing_fn": "hf_prep_rank:counting_fn",
    }
    config = parse_dataset_config(section, "train_loader.dataset")
    dataset, lengths = build_hf_finetuning_dataset(config, tokenizer, "train_loader.dataset")
    result: dict[str, Any] = {
        # The loader imported this file again as module hf_prep_rank (not __main__).
        "calls": importlib.import_module("hf_prep_rank").CALLS["count"],
        "turns": [row["turns"] for row in dataset.to_list()],
        "lengths": lengths,
    }
    config.preprocessing_fn = "hf_prep_rank:fails_on_local_rank_zero"
    try:
        build_hf_finetuning_dataset(config, tokenizer, "train_loader.dataset")
        result["error"] = None
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"
    path = Path(out_dir) / f"rank{dist.get_global_rank()}.json"
    path.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:5])
