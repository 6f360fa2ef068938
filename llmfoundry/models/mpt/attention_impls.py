"""The attention kernels of MPT and the inputs every layer's attention shares.

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

Each is also registered (see :mod:`.layer_table`) as LLM Foundry's ``attention_implementations``
call it: ``(query, key, value, n_heads=, kv_n_heads=, softmax_scale=, attn_bias=, ...)`` on
``(batch, seq, heads * head_dim)`` tensors, returning ``(output, None, past_key_value)``; a
plug-in implementation is called the same way (see :func:`registry_attention_call`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .config_defaults import FLEX_IMPLS
from .layer_table import register_builtin

_compiled_flex: Any = None
# Inductor's FlexAttention lowering refuses smaller query/key/value head dimensions.
FLEX_MIN_HEAD_DIM = 16


@functools.cache
def flash_attn_installed() -> bool:
    """Whether the flash-attn package is importable (looked up once: it is asked per layer)."""
    return importlib.util.find_spec("flash_attn") is not None


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
        positions: ``(b or 1, s)`` position of each new token (for temperature tuning).
        shared: what a layer hands to later layers (``block_overrides``' KV reuse): one dict
            per forward, common to every ``AttentionInputs`` of that forward.
    """

    bias: torch.Tensor | None = None
    allowed: torch.Tensor | None = None
    block_mask: Any = None
    alibi_slopes: torch.Tensor | None = None
    plain_causal: bool = True
    window: int | None = None
    positions: torch.Tensor | None = None
    shared: dict[Any, Any] = field(default_factory=dict)


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


def repeat_kv(tensor: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Repeat each key/value head ``n_rep`` times: ``(b, kv, s, d) -> (b, kv * n_rep, s, d)``."""
    if n_rep == 1:
        return tensor
    return tensor.repeat_interleave(n_rep, dim=1)


def masked_bias(
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


def causal_allowed(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Plain causal attention's mask, ``(q, k)``: query ``i`` sees the keys ``<= i + k - q`` (the
    queries are the last ``q`` positions of the ``k`` keys)."""
    q_len, k_len = query.shape[-2], key.shape[-2]
    return torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)


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
        allowed = causal_allowed(query, key)
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
        allowed = causal_allowed(query, key)
    mask = masked_bias(bias, allowed, query.dtype)
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


def sdpa_reason(attn_impl: str, query: torch.Tensor) -> str:
    """Why a non-``torch`` implementation is running SDPA, said once per process."""
    if attn_impl == "flash":
        why = (
            "flash-attn is not installed"
            if not flash_attn_installed()
            else "flash-attn takes CUDA half-precision inputs without padding or packed sequences only"
        )
        return f"attn_impl=flash: {why}; using torch scaled_dot_product_attention (fused kernels where available)"
    head_dim = query.shape[-1]
    if attn_impl in FLEX_IMPLS and query.device.type != "cpu" and head_dim < FLEX_MIN_HEAD_DIM:
        return (
            f"attn_impl={attn_impl}: the compiled FlexAttention kernel needs a head dimension of at "
            f"least {FLEX_MIN_HEAD_DIM} (this model's is {head_dim}); using torch "
            "scaled_dot_product_attention (same masks and bias)"
        )
    if attn_impl in FLEX_IMPLS:
        return (
            f"attn_impl={attn_impl}: FlexAttention has no CPU backward; training steps on CPU use "
            "torch scaled_dot_product_attention (same masks and bias)"
        )
    return f"attn_impl={attn_impl}: using torch scaled_dot_product_attention"


def flex_available_here(device: torch.device, head_dim: int) -> bool:
    """Whether FlexAttention can run now: on CPU only without autograd (eager, no backward), on
    GPU when the head dimension is at least ``FLEX_MIN_HEAD_DIM`` (the compiled kernel's floor)."""
    if device.type == "cpu":
        return not torch.is_grad_enabled()
    return head_dim >= FLEX_MIN_HEAD_DIM


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
    return out


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
    # Imported by name, so that transformers' check of remote code does not demand flash-attn.
    flash_attn_func = importlib.import_module("flash_attn").flash_attn_func
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


def _registry_mask(
    q_len: int,
    k_len: int,
    is_causal: bool,
    sliding_window_size: int | None,
    key_padding_mask: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor:
    """The boolean mask ``(b or 1, 1, q_len, k_len)`` of LLM Foundry's attention arguments.

    Causal masks align queries with the last keys (a KV cache's layout); the sliding window
    lets query ``i`` see keys ``i - window .. i``; ``key_padding_mask`` is ``(b, k_len)``.
    """
    offset = k_len - q_len
    allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
    if is_causal:
        allowed = allowed.tril(offset)
    if sliding_window_size is not None and sliding_window_size != -1:
        allowed = allowed & ~torch.ones_like(allowed).tril(offset - sliding_window_size - 1)
    mask = allowed.view(1, 1, q_len, k_len)
    if key_padding_mask is not None:
        mask = mask & key_padding_mask.bool().view(-1, 1, 1, k_len)
    return mask


def registry_attention_fn(dense: Callable[..., torch.Tensor]) -> Callable[..., Any]:
    """``dense`` (:func:`torch_attention` or :func:`sdpa_attention`) with LLM Foundry's
    ``attention_implementations`` signature.

    The returned function takes ``query`` ``(b, s, n_heads * d)`` and ``key``/``value``
    ``(b, s_k, kv_n_heads * d)``, appends them to ``past_key_value`` (a ``(key, value)`` pair in
    the same layout) when given, and returns ``(output (b, s, n_heads * d), None, (key, value))``.
    Attention weights are never returned (``needs_weights`` is not supported).
    """

    def attention_fn(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        n_heads: int,
        kv_n_heads: int,
        past_key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
        softmax_scale: float | None = None,
        attn_bias: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = True,
        dropout_p: float = 0.0,
        training: bool = True,
        needs_weights: bool = False,
        attn_logit_softcapping: float | None = None,
        sliding_window_size: int | None = -1,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None, tuple[torch.Tensor, torch.Tensor]]:
        del needs_weights, kwargs
        if past_key_value is not None:
            key = torch.cat([past_key_value[0], key], dim=1)
            value = torch.cat([past_key_value[1], value], dim=1)
        batch, q_len, _ = query.shape
        head_dim = query.shape[-1] // n_heads
        q = query.view(batch, q_len, n_heads, head_dim).transpose(1, 2)
        k, v = (
            repeat_kv(
                t.view(batch, -1, kv_n_heads, head_dim).transpose(1, 2), n_heads // kv_n_heads
            )
            for t in (key, value)
        )
        allowed = _registry_mask(
            q_len, k.shape[-2], is_causal, sliding_window_size, key_padding_mask, query.device
        )
        out = dense(
            q,
            k,
            v,
            attn_bias,
            allowed,
            softmax_scale or 1 / math.sqrt(head_dim),
            dropout_p if training else 0.0,
            attn_logit_softcapping,
        )
        return out.transpose(1, 2).reshape(batch, q_len, n_heads * head_dim), None, (key, value)

    attention_fn.__name__ = f"{dense.__name__}_fn"
    attention_fn.__qualname__ = attention_fn.__name__
    return attention_fn


for _name in ("torch", "flash", "sdpa", "triton", "flex"):
    register_builtin(
        "attention_implementations",
        _name,
        registry_attention_fn(torch_attention if _name == "torch" else sdpa_attention),
    )


def registry_attention_call(
    attention_fn: Callable[..., Any],
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    inputs: AttentionInputs,
    softmax_scale: float,
    dropout_p: float,
    softcap: float | None,
) -> torch.Tensor:
    """Run a plug-in attention implementation as LLM Foundry calls one.

    ``query`` is ``(b, n_heads, s, d)`` and ``key``/``value`` ``(b, kv_n_heads, s_k, d)``, the
    cache already applied. The implementation gets the whole mask (causal, window, padding,
    packed documents) folded with the ALiBi bias into ``attn_bias`` (None when plain causal
    attention without ALiBi is all that is needed, which ``is_causal`` says).

    Returns:
        ``(b, n_heads, s, d)``.
    """
    batch, n_heads, q_len, head_dim = query.shape
    kv_n_heads = key.shape[1]
    out, _, _ = attention_fn(
        query.transpose(1, 2).reshape(batch, q_len, n_heads * head_dim),
        key.transpose(1, 2).reshape(batch, -1, kv_n_heads * head_dim),
        value.transpose(1, 2).reshape(batch, -1, kv_n_heads * head_dim),
        n_heads=n_heads,
        kv_n_heads=kv_n_heads,
        past_key_value=None,
        softmax_scale=softmax_scale,
        attn_bias=masked_bias(inputs.bias, inputs.allowed, query.dtype),
        key_padding_mask=None,
        is_causal=True,
        dropout_p=dropout_p,
        training=dropout_p > 0,
        needs_weights=False,
        attn_logit_softcapping=softcap,
        sliding_window_size=inputs.window if inputs.window is not None else -1,
    )
    return out.view(batch, q_len, n_heads, head_dim).transpose(1, 2)
