"""``mbmoe_tok_per_expert``: how evenly a mixture-of-experts model's routers spread the tokens."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from llmfoundry.models.mpt.moe import moe_layers
from llmfoundry.utils.config_checks import PositiveInt, check_arguments

_STATS = ("min", "max", "median", "std")


def tokens_per_expert_metrics(
    layer_counts: Sequence[torch.Tensor],
    top_k: Sequence[int],
    normalize: bool = True,
    every_layer: bool = False,
) -> dict[str, float]:
    """The logged statistics of each layer's tokens-per-expert counts.

    Args:
        layer_counts: ``(E,)`` assignments per expert, one tensor per MoE layer.
        top_k: each layer's experts per token.
        normalize: divide each layer's counts by its number of tokens (its total over
            ``top_k``): a perfectly balanced layer then shows ``top_k / E`` for every expert.
        every_layer: add each layer's own statistics (``mb_moe/layer{i}_*``).

    Returns:
        ``mb_moe/all_layers_{min,max,median,std}_tpe`` over every layer's counts together,
        ``mb_moe/all_layers_max_over_mean_tpe`` (the busiest expert's share over the mean:
        1 when balanced), and with ``every_layer`` the same four per layer. The median is the
        middle value (the mean of the two middle ones for an even count); the standard
        deviation divides by the number of values.
    """
    counts = [c.float() for c in layer_counts]
    if normalize:
        counts = [c / (c.sum() / k) for c, k in zip(counts, top_k, strict=True)]
    metrics = _describe("mb_moe/all_layers", torch.cat(counts))
    every = torch.cat(counts)
    metrics["mb_moe/all_layers_max_over_mean_tpe"] = float(every.max() / every.mean())
    if every_layer:
        for index, layer in enumerate(counts):
            metrics.update(_describe(f"mb_moe/layer{index}", layer))
    return metrics


def _describe(prefix: str, values: torch.Tensor) -> dict[str, float]:
    stats = {
        "min": values.min(),
        "max": values.max(),
        "median": torch.quantile(values, 0.5),
        "std": values.std(correction=0),
    }
    return {f"{prefix}_{name}_tpe": float(stats[name]) for name in _STATS}


class TokPerExpert(Callback):
    """Log the tokens each expert of each MoE layer received (LLM Foundry's
    ``mbmoe_tok_per_expert``), every ``log_interval`` batches, at the batch's end.

    The counts are those of the last training microbatch of the batch (each forward of an MoE
    layer replaces its ``last_stats``), counted before ``mb_moe``'s capacity drops any. The
    metrics are those of ``tokens_per_expert_metrics``; ``mb_moe/all_layers_max_over_mean_tpe``
    is ours, not LLM Foundry's. Layers that MegaBlocks itself runs (on GPU with MegaBlocks
    installed) keep their counts inside MegaBlocks and are not logged here.

    Args:
        log_interval: log every this many batches.
        log_every_layer: log each layer's statistics too (``mb_moe/layer{i}_*``).
        all_reduce_stats: sum the counts over all ranks first (a collective: every rank logs).
        normalize: divide each layer's counts by its number of tokens (see
            ``tokens_per_expert_metrics``).

    Raises:
        ConfigError: on a ``log_interval`` below 1.
    """

    def __init__(
        self,
        log_interval: PositiveInt = 10,
        log_every_layer: bool = False,
        all_reduce_stats: bool = False,
        normalize: bool = True,
    ) -> None:
        check_arguments(TokPerExpert, "callbacks.mbmoe_tok_per_expert.", log_interval=log_interval)
        self.log_interval = log_interval
        self.log_every_layer = log_every_layer
        self.all_reduce_stats = all_reduce_stats
        self.normalize = normalize

    def batch_end(self, state: State, logger: Logger) -> None:
        """Log the statistics on every ``log_interval``-th batch."""
        if state.timestamp.batch.value % self.log_interval != 0:
            return
        layers = [layer for layer in moe_layers(state.model) if layer.last_stats is not None]
        if not layers:
            return
        counts = torch.stack(
            [layer.last_stats.tokens_per_expert.float() for layer in layers if layer.last_stats]
        )
        if self.all_reduce_stats:
            dist.all_reduce(counts, reduce_operation="SUM")
        metrics = tokens_per_expert_metrics(
            list(counts),
            [layer.options.top_k for layer in layers],
            normalize=self.normalize,
            every_layer=self.log_every_layer,
        )
        logger.log_metrics(metrics)


# LLM Foundry's class name.
MegaBlocksMoE_TokPerExpert = TokPerExpert
