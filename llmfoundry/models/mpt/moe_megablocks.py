"""``ffn_type: mb_moe`` / ``mb_dmoe`` on MegaBlocks, when it is installed and CUDA is there.

MegaBlocks is imported lazily by name (``importlib``): this file ships inside exported
checkpoints, which must load without it. Where MegaBlocks or CUDA is missing, ``ffn.py``
builds the built-in ``MoEFFN`` instead (same parameter names and layout) and says so once per
process (``announce_fallback``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .moe_options import MoEOptions

logger = logging.getLogger(__name__)

_announced: set[str] = set()
# Set on the modules MegaBlocks builds: their ``Arguments`` (for the balancing loss) and
# ``MoEOptions`` (for the active parameter count).
ARGS_ATTR = "_megablocks_args"
OPTIONS_ATTR = "_moe_options"


@functools.cache
def megablocks_usable() -> bool:
    """Whether MegaBlocks is importable and a CUDA device is there (looked up once)."""
    return importlib.util.find_spec("megablocks") is not None and torch.cuda.is_available()


def announce_fallback(ffn_type: str) -> None:
    """Say once per process that ``ffn_type`` runs on the built-in PyTorch MoE."""
    if ffn_type in _announced:
        return
    _announced.add(ffn_type)
    logger.warning(
        "ffn_type %s: MegaBlocks is not installed (pip install 'llm-foundry[megablocks]') or "
        "there is no CUDA; using the built-in PyTorch MoE (same parameters, same results)",
        ffn_type,
    )


def build_megablocks_moe(
    ffn_type: str,
    d_model: int,
    options: MoEOptions,
    moe_keys: Mapping[str, Any],
    activation: nn.Module,
    bias: bool,
    device: str | None,
) -> nn.Module:
    """MegaBlocks' ``dMoE`` (``mb_dmoe``) or ``MoE`` (``mb_moe``), its ``Arguments`` from the
    ``ffn_config`` keys that MegaBlocks knows."""
    arguments: Any = importlib.import_module("megablocks.layers.arguments").Arguments
    fields = {field.name for field in dataclasses.fields(arguments)}
    values: dict[str, Any] = {k: v for k, v in moe_keys.items() if k in fields}
    values.update(
        hidden_size=d_model,
        ffn_hidden_size=options.ffn_hidden_size,
        bias=bias,
        return_bias=False,
        activation_fn=activation,
    )
    if device is not None:
        values["device"] = device
    args = arguments(**values)
    if ffn_type == "mb_dmoe":
        layer: Any = importlib.import_module("megablocks.layers.dmoe").dMoE
    else:
        layer = importlib.import_module("megablocks.layers.moe").MoE
    module: nn.Module = layer(args)
    setattr(module, ARGS_ATTR, args)
    setattr(module, OPTIONS_ATTR, options)
    return module


def megablocks_lbl(model: nn.Module) -> torch.Tensor | None:
    """MegaBlocks' load-balancing loss of the last forward (None without MegaBlocks layers);
    its saved router statistics are cleared."""
    layers = [m for m in model.modules() if hasattr(m, ARGS_ATTR)]
    if not layers:
        return None
    moe: Any = importlib.import_module("megablocks.layers.moe")
    args = dataclasses.replace(getattr(layers[0], ARGS_ATTR), num_layers=len(layers))
    loss = moe.batched_load_balancing_loss(args)
    moe.clear_load_balancing_loss()
    return loss
