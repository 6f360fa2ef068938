"""MPT attention: multi-head, multi-query and grouped-query attention with ALiBi and a KV cache.

The kernels live in :mod:`.attention_impls`. One class serves LLM Foundry's three
``attn_type`` names (registered as its ``attention_classes``); a plug-in attention class is
built the same way, ``(config=, device=, attn_config=)``, and called as this one is.

Per layer (``block_overrides``), a layer may attend with no position encoding (``nope``), scale
its queries by position (``attn_temperature_tuning``), or reuse an earlier layer's keys and
values (``reuse_kv_layer_idx``) or input (``reuse_kv_x_layer_idx``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import torch
from torch import nn

from .attention_impls import (
    AttentionInputs,
    alibi_bias,
    alibi_slopes,
    flash_attn_call,
    flash_attn_ready,
    flex_attention_call,
    flex_available_here,
    registry_attention_call,
    repeat_kv,
    sdpa_attention,
    sdpa_reason,
)
from .config_defaults import FLEX_IMPLS
from .config_layers import find_layer, is_builtin_name
from .configuration_mpt import MPTConfig
from .fc import build_linear, mark_fused, mark_residual
from .layer_table import register_builtin
from .norm import build_norm
from .rotary import Rotary, apply_rotary

logger = logging.getLogger(__name__)
_announced: set[str] = set()

__all__ = [
    "AttentionInputs",
    "GroupedQueryAttention",
    "alibi_bias",
    "alibi_slopes",
    "flex_available_here",
    "temperature_scales",
]


def announce_once(key: str, message: str) -> None:
    """Log ``message`` the first time ``key`` is seen in this process."""
    if key not in _announced:
        _announced.add(key)
        logger.info(message)


def temperature_scales(
    positions: torch.Tensor, floor_scale: float, attn_scale: float
) -> torch.Tensor:
    """Query multipliers of ``attn_temperature_tuning`` (Llama 4's), float32 like ``positions``.

    ``log(floor((position + 1) / floor_scale) + 1) * attn_scale + 1``: 1 for the first
    ``floor_scale - 1`` positions, growing logarithmically after.
    """
    steps = torch.floor((positions.float() + 1) / floor_scale)
    return torch.log(steps + 1) * attn_scale + 1


class GroupedQueryAttention(nn.Module):
    """Attention with ``n_heads`` query heads sharing ``kv_n_heads`` key/value heads.

    Multi-head attention is the case ``kv_n_heads == n_heads``; multi-query is ``kv_n_heads == 1``.
    Weight names follow published MPT checkpoints: ``Wqkv`` (fused) and ``out_proj``.

    Args:
        config: the model config.
        device: where to create the weights.
        attn_config: this layer's attention settings (``config.layer_attn_configs()[i]``);
            ``config.attn_config`` when not given.
    """

    def __init__(
        self,
        config: MPTConfig,
        device: str | None = None,
        attn_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        attn = attn_config if attn_config is not None else config.attn_config
        self.d_model = config.d_model
        self.n_heads = config.n_heads
        self.kv_n_heads = config.kv_n_heads
        self.head_dim = config.attn_head_dim
        self.q_dim = self.n_heads * self.head_dim
        self.kv_dim = self.kv_n_heads * self.head_dim
        # LLM Foundry's default scale uses d_model / n_heads, even when head_dim differs.
        self.softmax_scale = attn["softmax_scale"] or 1 / math.sqrt(config.d_model / config.n_heads)
        self.attn_pdrop = attn["attn_pdrop"]
        self.clip_qkv = attn["clip_qkv"]
        self.softcap = attn["attn_logit_softcapping"]
        self.impl = attn["attn_impl"]
        self.external_impl = (
            None
            if is_builtin_name("attn_config.attn_impl", self.impl)
            else find_layer("attn_config.attn_impl", self.impl)[1]
        )
        self.fused_qkv = attn["fused_qkv"]
        window = attn["sliding_window_size"]
        self.window: int | None = None if window in (-1, None) else int(window)
        self.nope = bool(attn.get("nope"))
        tuning = attn.get("attn_temperature_tuning")
        self.temperature_tuning = dict(tuning) if tuning and tuning.get("attn_scale") else None
        self.reuse_kv_layer_idx: int | None = attn.get("reuse_kv_layer_idx")
        self.reuse_kv_x_layer_idx: int | None = attn.get("reuse_kv_x_layer_idx")
        # Set by the model on a layer whose keys/values a later layer reuses.
        self.shares_kv = False
        self._build_projections(config, attn, device)

    def _build_projections(
        self, config: MPTConfig, attn: dict[str, Any], device: str | None
    ) -> None:
        """The q/k/v projections (a reusing layer projects queries only), norms and ``out_proj``."""
        fc, qkv_bias = config.fc_type, config.attention_bias
        if self.reuse_kv_layer_idx is not None:
            self.Wq = build_linear(fc, self.d_model, self.q_dim, qkv_bias, device)
        elif self.fused_qkv:
            self.Wqkv = build_linear(
                fc, self.d_model, self.q_dim + 2 * self.kv_dim, qkv_bias, device
            )
            # Split points of the fused weight, so that init treats q, k and v as separate matrices.
            mark_fused(self.Wqkv, 0, [self.q_dim, self.q_dim + self.kv_dim])
        else:
            self.Wq = build_linear(fc, self.d_model, self.q_dim, qkv_bias, device)
            self.Wk = build_linear(fc, self.d_model, self.kv_dim, qkv_bias, device)
            self.Wv = build_linear(fc, self.d_model, self.kv_dim, qkv_bias, device)
        # qk_ln normalizes the whole query and key; qk_gn normalizes each head on its own, with
        # one head_dim-sized weight shared by all heads.
        self.qk_ln = attn["qk_ln"]
        self.qk_gn = attn["qk_gn"]
        bias = not config.no_bias
        if self.qk_ln or self.qk_gn:
            q_size, k_size = (
                (self.head_dim, self.head_dim) if self.qk_gn else (self.q_dim, self.kv_dim)
            )
            self.q_ln = build_norm(config.norm_type, q_size, config.norm_eps, bias, device)
            if self.reuse_kv_layer_idx is None:
                self.k_ln = build_norm(config.norm_type, k_size, config.norm_eps, bias, device)
        self.out_proj = build_linear(fc, self.q_dim, self.d_model, bias, device)
        mark_residual(self.out_proj)

    def _clip(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.clamp(min=-self.clip_qkv, max=self.clip_qkv) if self.clip_qkv else tensor

    def _normed(self, tensor: torch.Tensor, norm: nn.Module, heads: int) -> torch.Tensor:
        """``tensor`` through ``norm`` (``qk_ln``), or per head (``qk_gn``); dtype kept."""
        dtype = tensor.dtype
        if self.qk_gn:
            return norm(tensor.unflatten(-1, (heads, self.head_dim))).to(dtype).flatten(-2)
        return norm(tensor).to(dtype)

    def _project(
        self, x: torch.Tensor, kv_x: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Queries, keys and values (no keys/values for a layer reusing another's)."""
        if self.reuse_kv_layer_idx is not None:
            query, key, value = self._clip(self.Wq(x)), None, None
        elif self.fused_qkv:
            qkv = self._clip(self.Wqkv(x))
            query, key, value = qkv.split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        else:
            source = x if kv_x is None else kv_x
            query, key, value = (
                self._clip(t) for t in (self.Wq(x), self.Wk(source), self.Wv(source))
            )
        if self.qk_ln or self.qk_gn:
            query = self._normed(query, self.q_ln, self.n_heads)
            if key is not None:
                key = self._normed(key, self.k_ln, self.kv_n_heads)
        return query, key, value

    def _tune_temperature(self, query: torch.Tensor, inputs: AttentionInputs) -> torch.Tensor:
        """Scale each query by its position (``attn_temperature_tuning``), when on."""
        if self.temperature_tuning is None:
            return query
        if inputs.positions is None:
            raise ValueError("attn_temperature_tuning needs the token positions in AttentionInputs")
        scales = temperature_scales(
            inputs.positions,
            float(self.temperature_tuning["floor_scale"]),
            float(self.temperature_tuning["attn_scale"]),
        )
        return (query * scales.unsqueeze(-1)).to(query.dtype)

    def forward(
        self,
        x: torch.Tensor,
        inputs: AttentionInputs,
        past_key_values: Any | None = None,
        layer_idx: int = 0,
        rotary: Rotary | None = None,
        kv_x: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from every position of ``x`` to the cached and current keys.

        Args:
            x: ``(b, s, d_model)``.
            inputs: the bias and masks shared by every block (see :class:`AttentionInputs`).
            past_key_values: a ``transformers`` ``Cache``; this layer's keys/values are appended.
            layer_idx: this layer's index in the cache.
            rotary: RoPE ``(cos, sin, xpos)`` of the new tokens' positions, or None without RoPE.
            kv_x: the (normalized) input keys and values are projected from, for a layer with
                ``reuse_kv_x_layer_idx``; None otherwise.

        Returns:
            ``(b, s, d_model)``.
        """
        batch, seq, _ = x.shape
        query, key, value = self._project(x, kv_x)
        query = self._tune_temperature(query, inputs)
        query = query.view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)
        if key is not None and value is not None:
            key = key.view(batch, seq, self.kv_n_heads, self.head_dim).transpose(1, 2)
            value = value.view(batch, seq, self.kv_n_heads, self.head_dim).transpose(1, 2)
        if rotary is not None and not self.nope:
            cos, sin, xpos = rotary
            query = apply_rotary(query, cos, sin, xpos)
            if key is not None:
                key = apply_rotary(key, cos, sin, None if xpos is None else xpos.reciprocal())
        if key is None or value is None:
            # A layer reusing an earlier one's keys and values (already rotated and cached).
            key, value = inputs.shared[("kv", self.reuse_kv_layer_idx)]
        else:
            if past_key_values is not None:
                key, value = past_key_values.update(key, value, layer_idx)
            if self.shares_kv:
                inputs.shared[("kv", layer_idx)] = (key, value)
        if self.nope:
            inputs = dataclasses.replace(inputs, bias=None, alibi_slopes=None)
        out = self._attend(query, key, value, inputs)
        return self.out_proj(out.transpose(1, 2).reshape(batch, seq, self.q_dim))

    def _attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, inputs: AttentionInputs
    ) -> torch.Tensor:
        """Dispatch to the configured implementation; ``key``/``value`` have kv_n_heads heads."""
        dropout_p = self.attn_pdrop if self.training else 0.0
        if self.external_impl is not None:
            return registry_attention_call(
                self.external_impl,
                query,
                key,
                value,
                inputs,
                self.softmax_scale,
                dropout_p,
                self.softcap,
            )
        if self.impl in FLEX_IMPLS and inputs.block_mask is not None:
            return flex_attention_call(query, key, value, inputs, self.softmax_scale, self.softcap)
        if self.impl == "flash" and flash_attn_ready(query, inputs, dropout_p):
            return flash_attn_call(
                query, key, value, inputs, self.softmax_scale, dropout_p, self.softcap
            )
        if self.impl != "torch":
            announce_once(self.impl, sdpa_reason(self.impl, query))
        n_rep = self.n_heads // self.kv_n_heads
        key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
        # ``torch`` too: SDPA computes torch_attention's function (it falls back to that math
        # where it cannot, e.g. with a softcap) without materializing the scores for backward;
        # forward+backward at seq 512 ran 6x faster on a CPU than the explicit math.
        return sdpa_attention(
            query,
            key,
            value,
            inputs.bias,
            inputs.allowed,
            self.softmax_scale,
            dropout_p,
            self.softcap,
        )


for _name in ("multihead_attention", "multiquery_attention", "grouped_query_attention"):
    register_builtin("attention_classes", _name, GroupedQueryAttention)
