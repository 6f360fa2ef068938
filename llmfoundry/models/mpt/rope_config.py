"""The RoPE settings of ``attn_config``: their checks and the numbers they stand for.

``rope_impl: dail`` (flash-attn's rotary layout) takes ``rope_dail_config.type`` ``original`` or
``xpos`` (with ``xpos_scale_base``); ``rope_impl: hf`` takes ``rope_hf_config.type``
``no_scaling``, ``linear`` or ``dynamic`` (with ``factor``). This file ships inside exported
checkpoints.
"""

from __future__ import annotations

from typing import Any

from .config_defaults import ROPE_DAIL_TYPES, ROPE_HF_TYPES, ROPE_IMPLS, MPTConfigError


def rope_position_scale(attn: dict[str, Any]) -> float:
    """Multiplier of positions before the rotation (``1 / factor`` for ``linear`` scaling)."""
    hf = attn["rope_hf_config"]
    if attn["rope_impl"] == "hf" and hf.get("type") == "linear":
        return 1.0 / float(hf["factor"])
    return 1.0


def xpos_scale_base(attn: dict[str, Any]) -> float | None:
    """XPos' ``scale_base`` when ``rope_dail_config.type`` is ``xpos``, else None."""
    dail = attn["rope_dail_config"]
    if attn["rope_impl"] == "dail" and dail.get("type") == "xpos":
        return float(dail["xpos_scale_base"])
    return None


def rope_theta_for(
    attn: dict[str, Any], max_seq_len: int, rotary_dim: int, total_len: int
) -> float:
    """The RoPE base for a sequence of ``total_len`` tokens (cache included).

    It is ``rope_theta``, except with ``rope_hf_config.type: dynamic`` past ``max_seq_len``,
    where the base grows as in dynamic NTK scaling (transformers' ``dynamic`` rope type):
    ``theta * (factor * len / max_seq_len - (factor - 1)) ** (d / (d - 2))``.
    """
    theta = float(attn["rope_theta"])
    hf = attn["rope_hf_config"]
    if attn["rope_impl"] != "hf" or hf.get("type") != "dynamic" or total_len <= max_seq_len:
        return theta
    factor = float(hf["factor"])
    growth = factor * total_len / max_seq_len - (factor - 1)
    return theta * growth ** (rotary_dim / (rotary_dim - 2))


def validate_rope(attn: dict[str, Any], rotary_dim: int, head_dim: int) -> None:
    """Check the RoPE settings this implementation can honour.

    Raises:
        MPTConfigError: naming the offending key.
    """
    if rotary_dim % 2 or rotary_dim > head_dim:
        raise MPTConfigError(
            f"model.attn_config.rope rotates {rotary_dim} features per head, which must be even "
            f"and at most the head size {head_dim} (check d_model/n_heads and head_dim)"
        )
    if attn["rope_impl"] not in ROPE_IMPLS:
        raise MPTConfigError(
            f"model.attn_config.rope_impl={attn['rope_impl']!r} is not supported; choose one of {', '.join(ROPE_IMPLS)}"
        )
    dail = attn["rope_dail_config"]
    if attn["rope_impl"] == "dail" and dail.get("type") not in ROPE_DAIL_TYPES:
        raise MPTConfigError(
            f"model.attn_config.rope_dail_config.type={dail.get('type')!r} is not supported; "
            f"choose one of {', '.join(ROPE_DAIL_TYPES)}"
        )
    base = xpos_scale_base(attn)
    if base is not None and not base > 0:
        raise MPTConfigError("model.attn_config.rope_dail_config.xpos_scale_base must be positive")
    hf_type = attn["rope_hf_config"].get("type")
    if attn["rope_impl"] == "hf" and hf_type not in ROPE_HF_TYPES:
        raise MPTConfigError(
            f"model.attn_config.rope_hf_config.type={hf_type!r} is not supported; "
            f"choose one of {', '.join(ROPE_HF_TYPES)}"
        )
    if (
        attn["rope_impl"] == "hf"
        and hf_type != "no_scaling"
        and not float(attn["rope_hf_config"]["factor"]) > 0
    ):
        raise MPTConfigError("model.attn_config.rope_hf_config.factor must be positive")
