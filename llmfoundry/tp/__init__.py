"""Tensor-parallel strategies, registered in ``llmfoundry.registry.tp_strategies`` by name.

``tp_config: {strategy: ffn, tensor_parallel_degree: N}`` in a training config builds its layer
plan with the strategy named there; a plug-in adds strategies with
``tp_strategies.register('name', func=fn)`` where ``fn(model) -> {module name: ParallelStyle}``.
"""

from llmfoundry import registry
from llmfoundry.tp.ffn_tp_strategy import ffn_tp_strategy

registry.tp_strategies.register("ffn", func=ffn_tp_strategy)

__all__ = ["ffn_tp_strategy"]
