"""One MPT transformer block: pre-norm attention and pre-norm FFN, each on a residual branch."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .attention import AttentionInputs, GroupedQueryAttention
from .configuration_mpt import MPTConfig
from .ffn import build_ffn
from .norm import build_norm


class MPTBlock(nn.Module):
    """``x + attn(norm_1(x))`` then ``x + ffn(norm_2(x))``.

    Args:
        config: the model config.
        device: where to create the weights.
    """

    def __init__(self, config: MPTConfig, device: str | None = None) -> None:
        super().__init__()
        bias = not config.no_bias
        self.norm_1 = build_norm(config.norm_type, config.d_model, config.norm_eps, bias, device)
        self.attn = GroupedQueryAttention(config, device)
        # TransformerEngine's LayerNormMLP normalizes its own input.
        self.norm_2 = (
            nn.Identity()
            if config.ffn_config["ffn_type"] == "te_ln_mlp"
            else build_norm(config.norm_type, config.d_model, config.norm_eps, bias, device)
        )
        self.ffn = build_ffn(config, device)
        self.resid_attn_dropout = nn.Dropout(config.resid_pdrop)
        self.resid_ffn_dropout = nn.Dropout(config.resid_pdrop)
        self.use_pad_tok_in_ffn = config.use_pad_tok_in_ffn

    def forward(
        self,
        x: torch.Tensor,
        inputs: AttentionInputs,
        token_mask: torch.Tensor | None = None,
        past_key_values: Any | None = None,
        layer_idx: int = 0,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run the block.

        Args:
            x: ``(b, s, d_model)``.
            inputs: the attention bias and masks (see :class:`AttentionInputs`).
            token_mask: ``(b, s)`` booleans, False on pad tokens; with
                ``use_pad_tok_in_ffn=False`` the FFN skips those tokens.
            past_key_values: a ``transformers`` ``Cache`` or None.
            layer_idx: this block's index in the cache.
            rotary: RoPE ``(cos, sin)`` for the new tokens, or None.

        Returns:
            ``(b, s, d_model)``.
        """
        x = x + self.resid_attn_dropout(
            self.attn(self.norm_1(x), inputs, past_key_values, layer_idx, rotary)
        )
        h = self.norm_2(x)
        if self.use_pad_tok_in_ffn or token_mask is None:
            ffn_out = self.ffn(h)
        else:
            ffn_out = torch.zeros_like(h)
            ffn_out[token_mask] = self.ffn(h[token_mask]).to(h.dtype)
        return x + self.resid_ffn_dropout(ffn_out)
