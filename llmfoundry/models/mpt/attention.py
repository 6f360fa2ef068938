"""MPT attention: multi-head, multi-query and grouped-query attention with ALiBi and a KV cache.

Every implementation computes the same function:
- ``torch``: the explicit math (scores, bias, mask, softmax), the reference.
- ``sdpa``: PyTorch's ``scaled_dot_product_attention``, which dispatches to fused
  (flash / memory-efficient) kernels where the hardware has them.
- ``flash``: the flash-attn package when it is installed and the inputs suit it (CUDA, half
  precision, no padding or packed sequences), SDPA otherwise.
- ``flex`` / ``triton``: PyTorch FlexAttention, with ALiBi and soft-capping as a score
  modification and causal, sliding-window, padding and sequence-id masks as a block mask
  (compiled on GPU). FlexAttention has no CPU backward, so on CPU it runs only without
  gradients and hands training steps to SDPA.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_mpt import FLEX_IMPLS, MPTConfig
from .fc import build_linear
from .norm import build_norm
from .rotary import apply_rotary

logger = logging.getLogger(__name__)
_announced: set[str] = set()
_compiled_flex: Any = None


@functools.cache
def flash_attn_installed() -> bool:
    """Whether the flash-attn package is importable (looked up once: it is asked per layer)."""
    return importlib.util.find_spec("flash_attn") is not None


def _announce_once(key: str, message: str) -> None:
    """Log ``message`` the first time ``key`` is seen in this process."""
    if key not in _announced:
        _announced.add(key)
        logger.info(message)


@dataclass
class AttentionInputs:
    """What every block's attention needs besides its own input, built once per forward.

    Attributes:
        bias: additive ALiBi bias ``(1, n_heads, 1, key_len)`` for the dense paths, or None.
        allowed: boolean mask broadcastable to ``(b, 1, q, key_len)``; None means plain causal
            attention over equal-length query and key.
        block_mask: FlexAttention ``BlockMask`` of the same mask, when the flex path runs.
        alibi_slopes: per-head ALiBi slopes ``(n_heads,)`` (float32), or None without ALiBi.
        plain_causal: True when the mask is causal (and windowed) only, with no padding or
            sequence ids: the case flash-attn's dense kernel handles.
        window: the sliding window (flash-attn's ``(window, 0)``), or None.
    """

    bias: torch.Tensor | None = None
    allowed: torch.Tensor | None = None
    block_mask: Any = None
    alibi_slopes: torch.Tensor | None = None
    plain_causal: bool = True
    window: int | None = None


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


def alibi_bias(slopes: torch.Tensor, key_len: int) -> torch.Tensor:
    """Additive ALiBi bias of shape ``(1, n_heads, 1, key_len)`` from :func:`alibi_slopes`.

    The bias of key ``j`` is ``slope * (j - (key_len - 1))``: it depends on the key only, which,
    inside a causal softmax, is the same as ``-slope * (i - j)`` for query ``i`` (softmax ignores a
    per-row constant). That keeps it valid with a KV cache, where queries are the last positions.
    """
    distance = torch.arange(1 - key_len, 1, dtype=torch.float32, device=slopes.device)
    return (slopes.view(1, -1, 1, 1) * distance.view(1, 1, 1, key_len)).contiguous()


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


def _sdpa_reason(attn_impl: str) -> str:
    """Why a non-``torch`` implementation is running SDPA, said once per process."""
    if attn_impl == "flash":
        why = (
            "flash-attn is not installed"
            if not flash_attn_installed()
            else "flash-attn takes CUDA half-precision inputs without padding or packed sequences only"
        )
        return f"attn_impl=flash: {why}; using torch scaled_dot_product_attention (fused kernels where available)"
    if attn_impl in FLEX_IMPLS:
        return (
            f"attn_impl={attn_impl}: FlexAttention has no CPU backward; training steps on CPU use "
            "torch scaled_dot_product_attention (same masks and bias)"
        )
    return f"attn_impl={attn_impl}: using torch scaled_dot_product_attention"


def flex_available_here(device: torch.device) -> bool:
    """Whether FlexAttention can run now: on GPU always, on CPU only without autograd."""
    return device.type != "cpu" or not torch.is_grad_enabled()


def _flex_fn() -> Any:
    """``flex_attention``, compiled once per process on GPU (eager on CPU)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if _compiled_flex is None and torch.cuda.is_available():
        # Default dynamic-shape handling: a second sequence length (each decoding step has a
        # longer key) marks lengths dynamic instead of recompiling for every one.
        _compiled_flex = torch.compile(flex_attention)
    return _compiled_flex if _compiled_flex is not None else flex_attention


def flex_attention_call(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    inputs: AttentionInputs,
    softmax_scale: float,
    softcap: float | None,
) -> torch.Tensor:
    """FlexAttention with the same semantics as :func:`torch_attention` (no dropout).

    ``key``/``value`` keep their ``kv_n_heads`` heads (FlexAttention groups them itself).
    """
    slopes = inputs.alibi_slopes
    key_len = key.shape[-2]

    def score_mod(score: Any, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        if softcap is not None:
            score = softcap * torch.tanh(score / softcap)
        if slopes is not None:
            score = score + slopes[h] * (kv_idx - (key_len - 1))
        return score

    modify = softcap is not None or slopes is not None
    with warnings.catch_warnings():
        # Eager FlexAttention (CPU) warns that it is unfused; we run it eagerly on purpose.
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        out = _flex_fn()(
            query,
            key,
            value,
            score_mod=score_mod if modify else None,
            block_mask=inputs.block_mask,
            scale=softmax_scale,
            enable_gqa=key.shape[1] != query.shape[1],
        )
    return out  # type: ignore[return-value]


def flash_attn_ready(query: torch.Tensor, inputs: AttentionInputs, dropout_p: float) -> bool:
    """Whether the flash-attn package can run this call (else SDPA runs it)."""
    del dropout_p
    return (
        query.is_cuda
        and query.dtype in (torch.float16, torch.bfloat16)
        and inputs.plain_causal
        and flash_attn_installed()
    )


def flash_attn_call(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    inputs: AttentionInputs,
    softmax_scale: float,
    dropout_p: float,
    softcap: float | None,
) -> torch.Tensor:
    """flash-attn's dense causal kernel; inputs and output are ``(b, heads, s, d)``.

    flash-attn aligns the causal mask to the bottom right (queries are the last positions, as
    with a KV cache), takes ALiBi as ``-slope * |i - j|`` (equal to our key-only bias inside a
    causal softmax) and groups key/value heads itself.
    """
    from flash_attn import flash_attn_func  # type: ignore[import-not-found]

    out = flash_attn_func(
        query.transpose(1, 2),
        key.transpose(1, 2),
        value.transpose(1, 2),
        dropout_p=dropout_p,
        softmax_scale=softmax_scale,
        causal=True,
        window_size=(inputs.window, 0) if inputs.window is not None else (-1, -1),
        alibi_slopes=inputs.alibi_slopes,
        softcap=softcap or 0.0,
    )
    return out.transpose(1, 2)


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
        self.impl = attn["attn_impl"]
        self.fused_qkv = attn["fused_qkv"]
        bias = not config.no_bias
        if self.fused_qkv:
            self.Wqkv = build_linear(
                config, self.d_model, self.d_model + 2 * self.kv_dim, bias, device
            )
            # Split points of the fused weight, so that init treats q, k and v as separate matrices.
            self.Wqkv._fused = (0, [self.d_model, self.d_model + self.kv_dim])  # type: ignore[assignment]
        else:
            self.Wq = build_linear(config, self.d_model, self.d_model, bias, device)
            self.Wk = build_linear(config, self.d_model, self.kv_dim, bias, device)
            self.Wv = build_linear(config, self.d_model, self.kv_dim, bias, device)
        # qk_ln normalizes the whole query (d_model) and key (kv_dim); qk_gn normalizes each
        # head on its own, with one head_dim-sized weight shared by all heads.
        self.qk_ln = attn["qk_ln"]
        self.qk_gn = attn["qk_gn"]
        if self.qk_ln or self.qk_gn:
            q_size, k_size = (
                (self.head_dim, self.head_dim) if self.qk_gn else (self.d_model, self.kv_dim)
            )
            self.q_ln = build_norm(config.norm_type, q_size, config.norm_eps, bias, device)
            self.k_ln = build_norm(config.norm_type, k_size, config.norm_eps, bias, device)
        self.out_proj = build_linear(config, self.d_model, self.d_model, bias, device)
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
        elif self.qk_gn:
            dtype = query.dtype
            query = self.q_ln(query.unflatten(-1, (self.n_heads, self.head_dim))).to(dtype)
            key = self.k_ln(key.unflatten(-1, (self.kv_n_heads, self.head_dim))).to(dtype)
            query, key = query.flatten(-2), key.flatten(-2)
        return query, key, value

    def forward(
        self,
        x: torch.Tensor,
        inputs: AttentionInputs,
        past_key_values: Any | None = None,
        layer_idx: int = 0,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attend from every position of ``x`` to the cached and current keys.

        Args:
            x: ``(b, s, d_model)``.
            inputs: the bias and masks shared by every block (see :class:`AttentionInputs`).
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
        out = self._attend(query, key, value, inputs)
        out = out.transpose(1, 2).reshape(batch, seq, self.d_model)
        return self.out_proj(out)

    def _attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, inputs: AttentionInputs
    ) -> torch.Tensor:
        """Dispatch to the configured implementation; ``key``/``value`` have kv_n_heads heads."""
        dropout_p = self.attn_pdrop if self.training else 0.0
        if self.impl in FLEX_IMPLS and inputs.block_mask is not None:
            return flex_attention_call(query, key, value, inputs, self.softmax_scale, self.softcap)
        if self.impl == "flash" and flash_attn_ready(query, inputs, dropout_p):
            return flash_attn_call(
                query, key, value, inputs, self.softmax_scale, dropout_p, self.softcap
            )
        if self.impl != "torch":
            _announce_once(self.impl, _sdpa_reason(self.impl))
        n_rep = self.n_heads // self.kv_n_heads
        key, value = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
        attention = torch_attention if self.impl == "torch" else sdpa_attention
        return attention(
            query,
            key,
            value,
            inputs.bias,
            inputs.allowed,
            self.softmax_scale,
            dropout_p,
            self.softcap,
        )
