"""Rotary position embeddings (RoPE, Su et al. 2021) for MPT attention.

Both ``rope_impl`` values of LLM Foundry compute the same rotation here: ``dail`` (the
flash-attn ``RotaryEmbedding`` layout, non-interleaved) and ``hf`` (``rotate_half``). Queries and
keys are rotated by their token's position before the key is cached, so a cached key keeps the
rotation of its own position.
"""

from __future__ import annotations

import torch


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


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (``(b, h, s, head_dim)``) by the angles behind ``cos``/``sin``, in float32."""
    rotated = x.float() * cos + _rotate_half(x.float()) * sin
    return rotated.to(x.dtype)
