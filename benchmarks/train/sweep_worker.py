"""One case of ``sweep.py``: train a YAML with overrides and write the run's speed figures as JSON.

Started by ``sweep.py`` under Composer's launcher (``composer -n <gpus> sweep_worker.py ...``);
not meant to be run by hand. Rank 0 writes ``--result``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

try:
    import llmfoundry  # noqa: F401
except ImportError:  # a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
from composer.core import State
from composer.loggers import InMemoryLogger, Logger

from llmfoundry.command_utils.train import train
from llmfoundry.utils.config_utils import TrainConfig, load_config


class SweepProbe(InMemoryLogger):
    """Keeps every logged metric and, per batch, how many graphs torch.compile has made so far."""

    def __init__(self) -> None:
        super().__init__()
        self.graphs_per_batch: list[int] = []

    def batch_end(self, state: State, logger: Logger) -> None:
        """Record the compiled-graph count after this batch."""
        del state, logger
        from torch._dynamo.utils import counters

        self.graphs_per_batch.append(int(counters["stats"]["unique_graphs"]))


def last_value(probe: SweepProbe, key: str) -> float | None:
    """The last value logged under ``key`` (None if never logged)."""
    series = probe.data.get(key) or []
    return float(series[-1][1]) if series else None


def summarize(
    cfg: TrainConfig, probe: SweepProbe, model: Any, world_size: int, sharded: bool
) -> dict[str, Any]:
    """The figures ``sweep.py`` turns into a table row."""
    inner = getattr(model, "model", model)
    config = getattr(inner, "config", None)
    n_params = getattr(model, "n_total_params", None) or sum(p.numel() for p in model.parameters())
    graphs = probe.graphs_per_batch
    warmup = min(len(graphs), 3)
    losses = [float(value) for _, value in probe.data.get("loss/train/total", [])]
    cuda = torch.cuda.is_available()
    fsdp = dict(cfg.fsdp_config or {}) if sharded else {}
    return {
        "samples_per_sec": last_value(probe, "throughput/samples_per_sec"),
        "batches": len(graphs),
        "n_params": int(n_params),
        "n_layers": getattr(config, "n_layers", None),
        "d_model": getattr(config, "d_model", None),
        "seq_len": cfg.max_seq_len,
        "micro_batch": cfg.device_train_microbatch_size,
        "global_batch": cfg.global_train_batch_size,
        "world_size": world_size,
        "gpu": torch.cuda.get_device_name() if cuda else "cpu",
        "precision": cfg.precision,
        "sharding": str(fsdp.get("sharding_strategy", "FULL_SHARD")) if sharded else "none",
        "mixed_precision": str(fsdp.get("mixed_precision", "DEFAULT")) if sharded else "",
        "act_ckpt": bool(fsdp.get("activation_checkpointing", False)),
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "graphs_after_warmup": graphs[warmup - 1] if warmup else 0,
        "graphs_at_end": graphs[-1] if graphs else 0,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Train one case and write its summary (rank 0)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--result", required=True, help="where rank 0 writes the JSON summary")
    parser.add_argument("yaml")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg, resolved = load_config(args.yaml, args.overrides, TrainConfig)
    probe = SweepProbe()
    trainer = train(cfg, resolved, extra_loggers=[probe])
    world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        summary = summarize(cfg, probe, trainer.state.model, world_size, trainer.state.fsdp_enabled)
        Path(args.result).write_text(json.dumps(summary, indent=1))
    trainer.close()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
