"""Linear layers of MPT: ``torch.nn.Linear``, or TransformerEngine's with ``fc_type: te``.

TransformerEngine is optional (the ``te`` extra); ``MPTConfig`` refuses ``fc_type: te`` and
``ffn_type: te_ln_mlp`` when it is not installed, so the imports below only run where it is.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .configuration_mpt import MPTConfig


def build_linear(
    config: MPTConfig, in_features: int, out_features: int, bias: bool, device: str | None
) -> nn.Module:
    """A linear layer of the kind ``config.fc_type`` names."""
    if config.fc_type == "te":
        import transformer_engine.pytorch as te  # type: ignore[import-not-found]

        return te.Linear(in_features, out_features, bias=bias, device=device or "cuda")
    return nn.Linear(in_features, out_features, bias=bias, device=device)


def build_te_ln_mlp(config: MPTConfig, device: str | None) -> nn.Module:
    """TransformerEngine's fused LayerNorm + MLP (``ffn_type: te_ln_mlp``).

    It normalizes its own input, so the block that holds it skips its ``norm_2``.
    """
    import transformer_engine.pytorch as te  # type: ignore[import-not-found]

    act: Any = config.ffn_config.get("ffn_act_fn") or "gelu"
    if isinstance(act, dict):
        act = act["name"]
    return te.LayerNormMLP(
        hidden_size=config.d_model,
        ffn_hidden_size=config.ffn_hidden_size,
        eps=config.norm_eps,
        bias=not config.no_bias,
        normalization="RMSNorm" if "rmsnorm" in config.norm_type else "LayerNorm",
        activation=act,
        device=device or "cuda",
    )
