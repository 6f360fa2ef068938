"""Rotary position embeddings (RoPE, Su et al. 2021) for MPT attention.

Both ``rope_impl`` values of LLM Foundry compute the same rotation here: ``dail`` (the
flash-attn ``RotaryEmbedding`` layout, non-interleaved) and ``hf`` (``rotate_half``). Queries and
keys are rotated by their token's position before the key is cached, so a cached key keeps the
rotation of its own position.

``rope_dail_config.type: xpos`` (Sun et al. 2022, as flash-attn's ``RotaryEmbedding`` computes
it) also scales rotated feature pair ``i`` of a query at position ``p`` by
``zeta_i ** ((p - c) / scale_base)`` and of a key by its reciprocal, with
``zeta_i = (2i + 0.4 d) / (1.4 d)``; a score between positions ``p`` and ``q`` is then weighted
by ``zeta_i ** ((p - q) / scale_base)`` whatever the centre ``c``. The centre here is fixed
(``max_seq_len // 2``), so cached keys stay valid as the sequence grows.
"""

from __future__ import annotations

import torch

# RoPE of the new tokens' positions: cos, sin and the XPos scale of queries (None without XPos).
Rotary = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def rotary_inv_freq(
    head_dim: int, theta: float, device: torch.device | str | None = None
) -> torch.Tensor:
    """The ``head_dim / 2`` rotation frequencies ``theta ** (-2i / head_dim)``, in float32."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim
    return 1.0 / (theta**exponents)


def rotary_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, position_scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines for each position, shaped ``(b, 1, s, head_dim)`` in float32.

    Args:
        positions: ``(b, s)`` (or ``(1, s)``) integer positions.
        head_dim: the per-head width (even).
        theta: the RoPE base (``rope_theta``).
        position_scale: positions are multiplied by this (``1 / factor`` for linear scaling).
    """
    inv_freq = rotary_inv_freq(head_dim, theta, positions.device)
    angles = positions.float().unsqueeze(-1) * position_scale * inv_freq  # (b, s, d/2)
    angles = torch.cat([angles, angles], dim=-1).unsqueeze(1)  # (b, 1, s, d)
    return angles.cos(), angles.sin()


def xpos_scale(
    positions: torch.Tensor, rotary_dim: int, scale_base: float, center: float
) -> torch.Tensor:
    """XPos' multiplier of each rotated query feature, ``(b, 1, s, rotary_dim)`` in float32.

    Keys take its reciprocal. ``zeta_i ** ((position - center) / scale_base)`` with
    ``zeta_i = (2i + 0.4 * rotary_dim) / (1.4 * rotary_dim)`` for each feature pair ``i``.
    """
    pairs = torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=positions.device)
    zeta = (pairs + 0.4 * rotary_dim) / (1.4 * rotary_dim)
    power = (positions.float() - center) / scale_base
    scale = zeta ** power.unsqueeze(-1)  # (b, s, d/2)
    return torch.cat([scale, scale], dim=-1).unsqueeze(1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rotary(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Rotate ``x`` (``(b, h, s, head_dim)``) by the angles behind ``cos``/``sin``, in float32.

    Only the first ``cos.shape[-1]`` features rotate (all of them unless ``head_dim`` is larger
    than the rotary size); ``scale`` (XPos) multiplies the rotated features.
    """
    rotary_dim = cos.shape[-1]
    full = x.float()
    head = full[..., :rotary_dim]
    rotated = head * cos + _rotate_half(head) * sin
    if scale is not None:
        rotated = rotated * scale
    if rotary_dim < full.shape[-1]:
        rotated = torch.cat([rotated, full[..., rotary_dim:]], dim=-1)
    return rotated.to(x.dtype)
