"""MPT attention: multi-head, multi-query and grouped-query attention with ALiBi and a KV cache.

Two implementations compute the same function:
- ``torch``: the explicit math (scores, bias, mask, softmax), the reference.
- ``flash`` / ``sdpa``: PyTorch's ``scaled_dot_product_attention``, which dispatches to fused
  (flash / memory-efficient) kernels where the hardware has them.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_mpt import MPTConfig
from .norm import build_norm
from .rotary import apply_rotary

logger = logging.getLogger(__name__)
_announced_sdpa_fallback = False


def alibi_slopes(
    n_heads: int, alibi_bias_max: float = 8, device: torch.device | str | None = None
) -> torch.Tensor:
    """Per-head ALiBi slopes (Press et al. 2022), as LLM Foundry computes them.

    For a head count that is not a power of two, slopes are taken from the next power of two,
    odd positions first, then even, and cut to ``n_heads``.

    Returns:
        A float32 tensor of shape ``(n_heads,)``.
    """
    padded = 2 ** math.ceil(math.log2(n_heads))
    exponents = torch.arange(1, padded + 1, dtype=torch.float32, device=device) * (
        alibi_bias_max / padded
    )
    slopes = 1.0 / torch.pow(2, exponents)
    if padded != n_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes


def alibi_bias(
    n_heads: int, key_len: int, alibi_bias_max: float, device: torch.device | str | None = None
) -> torch.Tensor:
    """Additive ALiBi bias of shape ``(1, n_heads, 1, key_len)``.

    The bias of key ``j`` is ``slope * (j - (key_len - 1))``: it depends on the key only, which,
    inside a causal softmax, is the same as ``-slope * (i - j)`` for query ``i`` (softmax ignores a
    per-row constant). That keeps it valid with a KV cache, where queries are the last positions.
    """
    distance = torch.arange(1 - key_len, 1, dtype=torch.float32, device=device)
    slopes = alibi_slopes(n_heads, alibi_bias_max, device=device)
    return (slopes.view(1, n_heads, 1, 1) * distance.view(1, 1, 1, key_len)).contiguous()


def _repeat_kv(tensor: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Repeat each key/value head ``n_rep`` times: ``(b, kv, s, d) -> (b, kv * n_rep, s, d)``."""
    if n_rep == 1:
        return tensor
    return tensor.repeat_interleave(n_rep, dim=1)


def _masked_bias(
    bias: torch.Tensor | None, allowed: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor | None:
    """Fold a boolean ``allowed`` mask into an additive bias, in ``dtype``.

    Disallowed positions get the most negative finite number rather than ``-inf`` so that a row
    with no allowed key (a left-pad query) yields a uniform distribution instead of NaN.
    """
    if allowed is None:
        return bias.to(dtype) if bias is not None else None
    base = (
        bias.to(dtype) if bias is not None else torch.zeros((), dtype=dtype, device=allowed.device)
    )
    return base.masked_fill(~allowed, torch.finfo(dtype).min)


def torch_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None,
    allowed: torch.Tensor | None,
    softmax_scale: float,
    dropout_p: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """Reference attention: ``softmax(cap(q k^T * scale) + bias, masked) v``.

    Args:
        query: ``(b, h, q, d)``.
        key: ``(b, h, k, d)`` (already repeated to ``h`` heads).
        value: ``(b, h, k, d)``.
        bias: additive bias broadcastable to ``(b, h, q, k)``, or None.
        allowed: boolean mask broadcastable to ``(b, h, q, k)``; False positions are excluded.
            None means plain causal attention (query ``i`` sees keys ``<= i + k - q``).
        softmax_scale: multiplier of the scores.
        dropout_p: dropout on the attention weights (0 in eval).
        softcap: if set, the scaled scores become ``softcap * tanh(scores / softcap)`` before
            the bias and mask are applied (``attn_logit_softcapping``, as in Gemma 2).

    Returns:
        ``(b, h, q, d)``.
    """
    scores = torch.matmul(query, key.transpose(-2, -1)) * softmax_scale
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    if allowed is None:
        q_len, k_len = query.shape[-2], key.shape[-2]
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(
            k_len - q_len
        )
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    if dropout_p > 0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    return torch.matmul(weights, value)


def sdpa_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None,
    allowed: torch.Tensor | None,
    softmax_scale: float,
    dropout_p: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """The same function as :func:`torch_attention`, through ``F.scaled_dot_product_attention``.

    With no bias and plain causal masking (``allowed`` is None) the ``is_causal`` flag lets
    PyTorch pick its flash kernel; otherwise the mask is folded into an additive bias.
    SDPA cannot transform the scores, so with ``softcap`` set this runs the reference math.
    """
    if softcap is not None:
        return torch_attention(query, key, value, bias, allowed, softmax_scale, dropout_p, softcap)
    q_len, k_len = query.shape[-2], key.shape[-2]
    if allowed is None and (bias is not None or q_len != k_len):
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(
            k_len - q_len
        )
    mask = _masked_bias(bias, allowed, query.dtype)
    is_causal = mask is None and q_len > 1
    return F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        scale=softmax_scale,
    )


def _resolve_impl(attn_impl: str) -> str:
    """Map the configured ``attn_impl`` to the function that will run (``torch`` or ``sdpa``)."""
    global _announced_sdpa_fallback
    if attn_impl == "flash" and not _announced_sdpa_fallback:
        # flash-attn's varlen kernels are not wired in; SDPA dispatches to a flash kernel on GPUs.
        logger.info(
            "attn_impl=flash: using torch scaled_dot_product_attention (fused kernels where available)"
        )
        _announced_sdpa_fallback = True
    return "torch" if attn_impl == "torch" else "sdpa"


class GroupedQueryAttention(nn.Module):
    """Attention with ``n_heads`` query heads sharing ``kv_n_heads`` key/value heads.

    Multi-head attention is the case ``kv_n_heads == n_heads``; multi-query is ``kv_n_heads == 1``.
    Weight names follow published MPT checkpoints: ``Wqkv`` (fused) and ``out_proj``.

    Args:
        config: the model config (``attn_config`` is read here).
        device: where to create the weights.
    """

    def __init__(self, config: MPTConfig, device: str | None = None) -> None:
        super().__init__()
        attn = config.attn_config
        self.d_model = config.d_model
        self.n_heads = config.n_heads
        self.kv_n_heads = config.kv_n_heads
        self.head_dim = config.d_model // config.n_heads
        self.kv_dim = self.kv_n_heads * self.head_dim
        self.softmax_scale = attn["softmax_scale"] or 1 / math.sqrt(self.head_dim)
        self.attn_pdrop = attn["attn_pdrop"]
        self.clip_qkv = attn["clip_qkv"]
        self.softcap = attn["attn_logit_softcapping"]
        self.impl = _resolve_impl(attn["attn_impl"])
        self.fused_qkv = attn["fused_qkv"]
        bias = not config.no_bias
        if self.fused_qkv:
            self.Wqkv = nn.Linear(
                self.d_model, self.d_model + 2 * self.kv_dim, bias=bias, device=device
            )
            # Split points of the fused weight, so that init treats q, k and v as separate matrices.
            self.Wqkv._fused = (0, [self.d_model, self.d_model + self.kv_dim])  # type: ignore[assignment]
        else:
            self.Wq = nn.Linear(self.d_model, self.d_model, bias=bias, device=device)
            self.Wk = nn.Linear(self.d_model, self.kv_dim, bias=bias, device=device)
            self.Wv = nn.Linear(self.d_model, self.kv_dim, bias=bias, device=device)
        self.qk_ln = attn["qk_ln"]
        if self.qk_ln:
            self.q_ln = build_norm(config.norm_type, self.d_model, config.norm_eps, bias, device)
            self.k_ln = build_norm(config.norm_type, self.kv_dim, config.norm_eps, bias, device)
        self.out_proj = nn.Linear(self.d_model, self.d_model, bias=bias, device=device)
        self.out_proj._is_residual = True  # type: ignore[assignment]

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.fused_qkv:
            qkv = self.Wqkv(x)
            if self.clip_qkv:
                qkv = qkv.clamp(min=-self.clip_qkv, max=self.clip_qkv)
            query, key, value = qkv.split([self.d_model, self.kv_dim, self.kv_dim], dim=-1)
        else:
            query, key, value = self.Wq(x), self.Wk(x), self.Wv(x)
            if self.clip_qkv:
                query, key, value = (
                    t.clamp(min=-self.clip_qkv, max=self.clip_qkv) for t in (query, key, value)
                )
        if self.qk_ln:
            dtype = query.dtype
            query, key = self.q_ln(query).to(dtype), self.k_ln(key).to(dtype)
        return query, key, value

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor | None,
        allowed: torch.Tensor | None,
        past_key_values: Any | None = None,
        layer_idx: int = 0,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attend from every position of ``x`` to the cached and current keys.

        Args:
            x: ``(b, s, d_model)``.
            bias: additive bias broadcastable to ``(b, n_heads, s, key_len)`` (ALiBi), or None.
            allowed: boolean mask broadcastable to ``(b, 1, s, key_len)``, or None for plain
                causal attention over equal-length query and key.
            past_key_values: a ``transformers`` ``Cache``; this layer's keys/values are appended.
            layer_idx: this layer's index in the cache.
            rotary: RoPE ``(cos, sin)`` of the new tokens' positions, or None without RoPE.

        Returns:
            ``(b, s, d_model)``.
        """
        batch, seq, _ = x.shape
        query, key, value = self._project(x)
        query = query.view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)
        key = key.view(batch, seq, self.kv_n_heads, self.head_dim).transpose(1, 2)
        value = value.view(batch, seq, self.kv_n_heads, self.head_dim).transpose(1, 2)
        if rotary is not None:
            query, key = apply_rotary(query, *rotary), apply_rotary(key, *rotary)
        if past_key_values is not None:
            key, value = past_key_values.update(key, value, layer_idx)
        n_rep = self.n_heads // self.kv_n_heads
        key, value = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
        dropout_p = self.attn_pdrop if self.training else 0.0
        if self.impl == "torch":
            out = torch_attention(
                query, key, value, bias, allowed, self.softmax_scale, dropout_p, self.softcap
            )
        else:
            out = sdpa_attention(
                query, key, value, bias, allowed, self.softmax_scale, dropout_p, self.softcap
            )
        out = out.transpose(1, 2).reshape(batch, seq, self.d_model)
        return self.out_proj(out)
