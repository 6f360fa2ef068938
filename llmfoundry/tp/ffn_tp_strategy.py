"""The ``ffn`` tensor-parallel strategy: shard each transformer block's feed-forward network.

For every module named ``...ffn`` with children ``up_proj`` and ``down_proj`` (MPT's blocks):

* ``ffn``: its input arrives split over the batch (dim 0, as data parallelism leaves it) and is
  gathered so that every rank of the tensor-parallel group sees the whole batch
  (``PrepareModuleInput``: ``Shard(0)`` -> ``Replicate()``);
* ``ffn.up_proj``: column-parallel, each rank holds a slice of the output features
  (``ColwiseParallel``: ``Replicate()`` in, ``Shard(-1)`` out);
* ``ffn.down_proj``: row-parallel, the partial products are reduced and the result is split
  over the batch again (``RowwiseParallel``: ``Shard(-1)`` in, ``Shard(0)`` out).
"""

from __future__ import annotations

from torch import nn
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
)
from torch.distributed.tensor.parallel.style import ParallelStyle

from llmfoundry.utils.exceptions import ConfigError

__all__ = ["ffn_tp_strategy"]

FFN = "ffn"
FFN_LAYERS = (FFN, f"{FFN}.up_proj", f"{FFN}.down_proj")


def ffn_tp_strategy(model: nn.Module) -> dict[str, ParallelStyle]:
    """The layer plan (module name -> ParallelStyle) that shards ``model``'s FFNs.

    Raises:
        ConfigError: if ``model`` has no ``ffn`` / ``ffn.up_proj`` / ``ffn.down_proj`` modules.
    """
    names = [name for name, _ in model.named_modules()]
    missing = [
        layer
        for layer in FFN_LAYERS
        if not any(name.endswith(f".{layer}") or name == layer for name in names)
    ]
    if missing:
        raise ConfigError(
            f"tp_config.strategy 'ffn' shards modules named {', '.join(FFN_LAYERS)}, and "
            f"{type(model).__name__} has no {', '.join(missing)}; use an MPT model or register a "
            "strategy for this model in the tp_strategies registry"
        )
    plan: dict[str, ParallelStyle] = {}
    for name in names:
        parts = name.split(".")
        if parts[-1] == FFN:
            plan[name] = PrepareModuleInput(
                input_layouts=Shard(0), desired_input_layouts=Replicate(), use_local_output=True
            )
        elif parts[-2:] == [FFN, "up_proj"]:
            plan[name] = ColwiseParallel(input_layouts=Replicate(), output_layouts=Shard(-1))
        elif parts[-2:] == [FFN, "down_proj"]:
            plan[name] = RowwiseParallel(input_layouts=Shard(-1), output_layouts=Shard(0))
    return plan
