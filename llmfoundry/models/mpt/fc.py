"""Linear layers of MPT (LLM Foundry's ``fc_type``): ``torch.nn.Linear``, TransformerEngine's
``te.Linear``, or a plug-in's.

TransformerEngine is optional (the ``te`` extra); ``MPTConfig`` refuses ``fc_type: te`` and
``ffn_type: te_ln_mlp`` when it is not installed. It is imported by name, so that
``transformers``' check of remote code does not demand it where it is not used.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from .layer_table import lookup_layer, register_builtin


def transformer_engine() -> Any:
    """The ``transformer_engine.pytorch`` module (only called where it is installed)."""
    return importlib.import_module("transformer_engine.pytorch")


def te_linear(
    in_features: int, out_features: int, bias: bool = True, device: str | None = None
) -> nn.Module:
    """TransformerEngine's ``Linear`` (``fc_type: te``; fp8-capable on H100)."""
    return transformer_engine().Linear(
        in_features, out_features, bias=bias, device=device or "cuda"
    )


register_builtin("fcs", "torch", nn.Linear)
register_builtin("fcs", "te", te_linear)


def fc_name(fc_type: str | dict[str, Any] | None) -> str:
    """The layer name of an ``fc_type`` written as ``torch`` or ``{name: torch}``."""
    if isinstance(fc_type, dict):
        return str(fc_type.get("name", "torch"))
    return fc_type or "torch"


def build_linear(
    fc_type: str | dict[str, Any] | None,
    in_features: int,
    out_features: int,
    bias: bool,
    device: str | None,
) -> nn.Module:
    """A linear layer of the kind ``fc_type`` names, called as LLM Foundry calls its ``fcs``.

    Raises:
        ValueError: if no linear layer has that name.
    """
    name = fc_name(fc_type)
    layer: Any = lookup_layer("fcs", name)
    if layer is None:
        raise ValueError(f"unknown fc_type {name!r}")
    return layer(in_features=in_features, out_features=out_features, bias=bias, device=device)


# Marks that ``param_init`` reads on a linear layer (LLM Foundry's attribute names): a residual
# output projection, divided after its draw, and the split points of a fused weight
# (``(dim, [split, ...])``), drawn slice by slice.
RESIDUAL_MARK = "_is_residual"
FUSED_MARK = "_fused"


def mark_residual(module: nn.Module) -> None:
    """Mark ``module`` as a residual output projection (see ``init_div_is_residual``)."""
    # Set by name: nn.Module's attribute typing admits only tensors and modules.
    setattr(module, RESIDUAL_MARK, True)


def mark_fused(module: nn.Module, dim: int, splits: list[int]) -> None:
    """Mark ``module``'s weight as several matrices joined along ``dim`` at ``splits``."""
    setattr(module, FUSED_MARK, (dim, splits))
