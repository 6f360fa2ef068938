"""One MPT transformer block: pre-norm attention and pre-norm FFN, each on a residual branch."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .attention import AttentionInputs
from .config_layers import find_layer
from .configuration_mpt import MPTConfig
from .ffn import build_ffn
from .norm import build_norm
from .rotary import Rotary


class MPTBlock(nn.Module):
    """``x + attn(norm_1(x))`` then ``x + ffn(norm_2(x))``.

    The attention module is the ``attention_classes`` entry ``attn_config.attn_type`` names;
    an FFN that normalizes its own input (``ffns_with_norm``, e.g. ``te_ln_mlp``) replaces
    ``norm_2`` with the identity.

    Args:
        config: the model config.
        device: where to create the weights.
        attn_config: this block's attention settings (see ``MPTConfig.layer_attn_configs``);
            ``config.attn_config`` when not given.
    """

    def __init__(
        self,
        config: MPTConfig,
        device: str | None = None,
        attn_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        bias = not config.no_bias
        attn = attn_config if attn_config is not None else config.attn_config
        attention_class = find_layer("attn_config.attn_type", attn["attn_type"])[1]
        ffn = build_ffn(config, device)
        self.norm_1 = build_norm(config.norm_type, config.d_model, config.norm_eps, bias, device)
        self.attn = attention_class(config=config, device=device, attn_config=attn)
        self.norm_2 = (
            nn.Identity()
            if getattr(ffn, "_has_norm", False)
            else build_norm(config.norm_type, config.d_model, config.norm_eps, bias, device)
        )
        self.ffn = ffn
        self.resid_attn_dropout = nn.Dropout(config.resid_pdrop)
        self.resid_ffn_dropout = nn.Dropout(config.resid_pdrop)
        self.use_pad_tok_in_ffn = config.use_pad_tok_in_ffn
        # Set by the model on a block whose input a later block projects keys/values from.
        self.shares_input = False

    def forward(
        self,
        x: torch.Tensor,
        inputs: AttentionInputs,
        token_mask: torch.Tensor | None = None,
        past_key_values: Any | None = None,
        layer_idx: int = 0,
        rotary: Rotary | None = None,
    ) -> torch.Tensor:
        """Run the block.

        Args:
            x: ``(b, s, d_model)``.
            inputs: the attention bias and masks (see :class:`AttentionInputs`).
            token_mask: ``(b, s)`` booleans, False on pad tokens; with
                ``use_pad_tok_in_ffn=False`` the FFN skips those tokens.
            past_key_values: a ``transformers`` ``Cache`` or None.
            layer_idx: this block's index in the cache.
            rotary: RoPE ``(cos, sin, xpos)`` for the new tokens, or None.

        Returns:
            ``(b, s, d_model)``.
        """
        if self.shares_input:
            inputs.shared[("x", layer_idx)] = x
        source = getattr(self.attn, "reuse_kv_x_layer_idx", None)
        kv_x = None if source is None else self.norm_1(inputs.shared[("x", source)])
        attn_out = self.attn(self.norm_1(x), inputs, past_key_values, layer_idx, rotary, kv_x)
        x = x + self.resid_attn_dropout(attn_out)
        h = self.norm_2(x)
        if self.use_pad_tok_in_ffn or token_mask is None:
            ffn_out = self.ffn(h)
        else:
            ffn_out = torch.zeros_like(h)
            ffn_out[token_mask] = self.ffn(h[token_mask]).to(h.dtype)
        return x + self.resid_ffn_dropout(ffn_out)
