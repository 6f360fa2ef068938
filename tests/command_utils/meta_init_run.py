"""Build a tiny MPT as the train command does and save its initial weights (rank 0).

Used by ``test_meta_init_fsdp2.py``:

    composer -n 2 meta_init_run.py sharded OUT.pt   init_device meta, FSDP2 FULL_SHARD
    python meta_init_run.py single OUT.pt            init_device cpu, one process

The sharded mode also saves, next to OUT.pt (``OUT.pt.facts``), what each rank saw: whether the
model stayed on meta until Composer sharded it, its local parameter count, the largest
transient full-size tensors drawn for one module, and every ``to_empty`` call. Run it with the
repository root on PYTHONPATH (it uses ``tests.fixtures``).
"""

from __future__ import annotations

import sys
from typing import Any, cast

import torch
from composer.utils import dist, reproducibility
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor

from llmfoundry.command_utils.meta_init import sharded_model_build
from llmfoundry.command_utils.parallelism import build_parallelism_config
from llmfoundry.models.mpt import sharded_init as sharded_init
from llmfoundry.utils.builders import build_composer_model_from_section
from tests.fixtures import cpu_trainer

SEED = 17
FSDP = {"sharding_strategy": "FULL_SHARD", "state_dict_type": "full"}
# Odd sizes (vocab 257, d_model 36) so that FSDP's shards are uneven; untied head and biases
# so that every kind of parameter is there.
MODEL: dict[str, Any] = {
    "name": "mpt_causal_lm",
    "d_model": 36,
    "n_heads": 4,
    "n_layers": 3,
    "expansion_ratio": 3,
    "max_seq_len": 32,
    "vocab_size": 257,
    "no_bias": False,
    "tie_word_embeddings": False,
    "use_train_metrics": False,
    "attn_config": {"attn_impl": "torch"},
}


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    state = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return {k: cast(torch.Tensor, v).clone() for k, v in state.items()}


def spy(facts: dict[str, Any]) -> None:
    """Record every ``to_empty`` call and transient full-size draw of this rank."""
    to_empty, keep_slices = nn.Module.to_empty, sharded_init._keep_local_slices

    def to_empty_spy(self: nn.Module, *, device: Any, recurse: bool = True) -> nn.Module:
        facts["to_empty"].append((type(self).__name__, recurse))
        return to_empty(self, device=device, recurse=recurse)

    def keep_slices_spy(sharded: dict[str, Any], full: dict[str, nn.Parameter]) -> None:
        facts["transient"] = max(facts["transient"], sum(p.numel() for p in full.values()))
        facts["sliced"] += len(full)
        keep_slices(sharded, full)

    nn.Module.to_empty = to_empty_spy
    sharded_init._keep_local_slices = keep_slices_spy


def sharded(out_path: str) -> None:
    dist.initialize_dist("cpu")
    rank, world_size = dist.get_global_rank(), dist.get_world_size()
    facts: dict[str, Any] = {"to_empty": [], "transient": 0, "sliced": 0}
    spy(facts)
    reproducibility.seed_all(SEED)
    torch.rand(1000 * (rank + 1))  # ranks draw differently before the build: no effect
    section = {**MODEL, "init_device": "meta"}
    with sharded_model_build(section, FSDP, "cpu", world_size) as kept:
        model = build_composer_model_from_section(section, None)
    facts["kept_on_meta"] = kept and all(p.is_meta for p in model.parameters())
    parallelism = build_parallelism_config(
        FSDP, None, "cpu", world_size, dist.get_local_world_size(), model=model
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cpu_trainer(
        model,
        optimizers=optimizer,
        parallelism_config=parallelism,
        precision="fp32",
        seed=SEED,
    )
    params = list(model.parameters())
    facts["all_dtensor_cpu"] = all(
        isinstance(p, DTensor) and p.to_local().device.type == "cpu" for p in params
    )
    facts["local_numel"] = sum(cast(DTensor, p).to_local().numel() for p in params)
    facts["total_numel"] = sum(p.numel() for p in params)
    facts["optimizer_has_shards"] = {
        id(p) for g in optimizer.param_groups for p in g["params"]
    } == {id(p) for p in params}
    every_rank: list[Any] = dist.all_gather_object(facts)
    state = full_state(model)
    if rank == 0:
        torch.save(state, out_path)
        torch.save(every_rank, out_path + ".facts")
    dist.barrier()
    torch.distributed.destroy_process_group()


def single(out_path: str) -> None:
    reproducibility.seed_all(SEED)
    model = build_composer_model_from_section({**MODEL, "init_device": "cpu"}, None)
    torch.save(full_state(model), out_path)


if __name__ == "__main__":
    {"sharded": sharded, "single": single}[sys.argv[1]](sys.argv[2])
