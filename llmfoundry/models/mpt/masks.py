"""The attention mask and bias every MPT block shares, built once per forward.

Query ``i`` (at position ``past_len + i``) may see key ``j`` when ``j`` is not in its future,
lies within the sliding window, is not padding, and belongs to the same packed document
(``sequence_id``); every query may always see its own key. The dense paths get a boolean mask
(None when it is plain causal) and the ALiBi bias; the FlexAttention path gets the same mask as
a ``BlockMask`` and the ALiBi slopes.
"""

from __future__ import annotations

from typing import Any

import torch

from .attention_impls import AttentionInputs, alibi_bias, alibi_slopes, flex_available_here
from .config_defaults import FLEX_IMPLS
from .configuration_mpt import MPTConfig
from .rope_config import xpos_scale_base
from .rotary import Rotary, rotary_cos_sin, xpos_scale


def token_positions(
    attention_mask: torch.Tensor | None,
    doc_ids: torch.Tensor | None,
    past_len: int,
    seq_len: int,
    device: torch.device,
) -> torch.Tensor:
    """Position of each new token, ``(b or 1, seq_len)``.

    Positions count only non-pad tokens (so left padding is harmless) and, in a packed row
    (``doc_ids`` given), restart at 0 with every document, so that a packed example gets
    the positions it has on its own.
    """
    if doc_ids is not None:
        index = torch.arange(doc_ids.shape[1], device=device).expand_as(doc_ids)
        starts = torch.ones_like(doc_ids, dtype=torch.bool)
        starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
        doc_start = torch.where(starts, index, 0).cummax(dim=1).values
        return (index - doc_start)[:, -seq_len:]
    if attention_mask is None:
        return torch.arange(past_len, past_len + seq_len, device=device).unsqueeze(0)
    positions = attention_mask.long().cumsum(dim=1) - 1
    return positions[:, -seq_len:].clamp(min=0)


def rotary_for(config: MPTConfig, positions: torch.Tensor, total_len: int) -> Rotary | None:
    """RoPE cosines, sines and XPos scales for the new tokens' positions (None without RoPE)."""
    if not config.attn_config["rope"]:
        return None
    theta = config.rope_theta_for(total_len)
    cos, sin = rotary_cos_sin(positions, config.rotary_dim, theta, config.rope_position_scale)
    scale_base = xpos_scale_base(config.attn_config)
    xpos = (
        None
        if scale_base is None
        else xpos_scale(positions, config.rotary_dim, scale_base, config.max_seq_len // 2)
    )
    return cos, sin, xpos


def attention_inputs_by_window(
    config: MPTConfig,
    windows: set[int],
    attention_mask: torch.Tensor | None,
    sequence_id: torch.Tensor | None,
    positions: torch.Tensor,
    past_len: int,
) -> dict[int, AttentionInputs]:
    """The attention inputs of one forward for each sliding window in use (-1: none).

    They share one ``shared`` dict, through which layers hand keys and values on.
    """
    shared: dict[Any, Any] = {}
    seq_len = positions.shape[-1]
    return {
        window: build_attention_inputs(
            config,
            attention_mask,
            sequence_id,
            past_len,
            seq_len,
            positions.device,
            window,
            positions,
            shared,
        )
        for window in windows
    }


def _self_keys(seq_len: int, past_len: int, device: torch.device) -> torch.Tensor:
    """``(seq_len, past_len + seq_len)`` booleans, True where query ``i`` meets its own key."""
    keys = torch.arange(past_len + seq_len, device=device)
    queries = torch.arange(past_len, past_len + seq_len, device=device)
    return keys.view(1, -1) == queries.view(-1, 1)


def build_attention_inputs(
    config: MPTConfig,
    attention_mask: torch.Tensor | None,
    sequence_id: torch.Tensor | None,
    past_len: int,
    seq_len: int,
    device: torch.device,
    sliding_window_size: int | None,
    positions: torch.Tensor | None = None,
    shared: dict[Any, Any] | None = None,
) -> AttentionInputs:
    """The bias and mask of the blocks with one sliding window, for ``seq_len`` new tokens after
    ``past_len`` cached ones.

    Args:
        config: the model config (ALiBi, attention implementation).
        attention_mask: ``(b, past_len + seq_len)``, 1 for real tokens, or None.
        sequence_id: ``(b, past_len + seq_len)`` packed-document ids, or None.
        past_len: tokens already in the KV cache.
        seq_len: new tokens.
        device: where to build the tensors.
        sliding_window_size: these blocks' window (-1 or None: none).
        positions: the new tokens' positions (see :class:`AttentionInputs`).
        shared: the dict that layers of this forward hand each other tensors through.

    Returns:
        The shared :class:`AttentionInputs` (a ``BlockMask`` for the flex path, a dense mask
        otherwise, None when plain causal suffices).
    """
    key_len = past_len + seq_len
    attn = config.attn_config
    alibi_bias_max = attn["alibi_bias_max"]
    window = None if sliding_window_size in (-1, None) else sliding_window_size
    # Export (ONNX, torch.export) traces one graph for every input: it cannot branch on the
    # mask's values, so it always takes the masked path (right for any mask).
    has_padding = attention_mask is not None and (
        torch.compiler.is_exporting() or not bool(attention_mask.bool().all())
    )
    inputs = AttentionInputs(
        alibi_slopes=alibi_slopes(config.n_heads, alibi_bias_max, device)
        if attn["alibi"]
        else None,
        plain_causal=not has_padding and sequence_id is None,
        window=window,
        positions=positions,
        shared=shared if shared is not None else {},
    )
    if attn["attn_impl"] in FLEX_IMPLS and flex_available_here(device, config.attn_head_dim):
        inputs.block_mask = _block_mask(
            attention_mask if has_padding else None,
            sequence_id,
            past_len,
            seq_len,
            window,
            device,
        )
        return inputs
    if inputs.alibi_slopes is not None:
        inputs.bias = alibi_bias(inputs.alibi_slopes, key_len)
    if inputs.plain_causal and window is None and past_len == 0:
        return inputs
    causal = torch.ones(seq_len, key_len, dtype=torch.bool, device=device).tril(past_len)
    if window is not None:
        # Query i sees keys j with i - window <= j <= i: flash-attn's (window, 0) semantics.
        causal = causal & ~torch.ones_like(causal).tril(past_len - window - 1)
    allowed = causal.view(1, 1, seq_len, key_len)
    if sequence_id is not None:
        same = sequence_id[:, -seq_len:].unsqueeze(-1) == sequence_id.unsqueeze(-2)
        allowed = allowed & same.unsqueeze(1)
    if has_padding:
        assert attention_mask is not None
        allowed = allowed & attention_mask.bool().view(-1, 1, 1, key_len)
        # A pad query would otherwise have no key left, and a fully masked softmax row turns
        # uniform over *every* key, future tokens included: the logit at the last pad would
        # see the next real token (a label leak) and the torch and SDPA paths would disagree
        # on its gradient. Letting each query see itself keeps pad rows causal and finite.
        allowed = allowed | _self_keys(seq_len, past_len, device).view(1, 1, seq_len, key_len)
    inputs.allowed = allowed
    return inputs


def _block_mask(
    attention_mask: torch.Tensor | None,
    sequence_id: torch.Tensor | None,
    past_len: int,
    seq_len: int,
    window: int | None,
    device: torch.device,
) -> Any:
    """The mask of :meth:`_attention_inputs` as a FlexAttention ``BlockMask``."""
    from torch.nn.attention.flex_attention import create_block_mask

    key_ok = attention_mask.bool() if attention_mask is not None else None

    def mask_mod(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        q_pos = q_idx + past_len
        allowed = kv_idx <= q_pos
        if window is not None:
            allowed = allowed & (q_pos - kv_idx <= window)
        if sequence_id is not None:
            allowed = allowed & (sequence_id[b, q_pos] == sequence_id[b, kv_idx])
        if key_ok is not None:
            allowed = (allowed & key_ok[b, kv_idx]) | (kv_idx == q_pos)
        return allowed

    # A mask per batch row when rows differ (padding or packed sequences), else one for all.
    per_row = key_ok if key_ok is not None else sequence_id
    batch = per_row.shape[0] if per_row is not None else None
    return create_block_mask(
        mask_mod,
        B=batch,
        H=None,
        Q_LEN=seq_len,
        KV_LEN=past_len + seq_len,
        device=device,
        _compile=device.type == "cuda",
    )
