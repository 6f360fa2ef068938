"""The defaults of MPT's nested configs and the helpers that merge a user's values into them.

The key names and defaults are LLM Foundry's (0.22 included: ``attn_config.nope`` and
``attn_config.attn_temperature_tuning``). This file ships inside exported checkpoints.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any

from transformers import PretrainedConfig

from .layer_table import BUILTIN_NAMES

ATTN_CONFIG_DEFAULTS: dict[str, Any] = {
    "attn_type": "multihead_attention",
    "attn_pdrop": 0.0,
    "attn_impl": "flash",
    "qk_ln": False,
    "qk_gn": False,
    "clip_qkv": None,
    "softmax_scale": None,
    "attn_uses_sequence_id": False,
    "sliding_window_size": -1,
    "attn_logit_softcapping": None,
    "alibi": False,
    "alibi_bias_max": 8,
    "rope": False,
    # No position encoding; only meaningful per layer, through block_overrides.
    "nope": False,
    "rope_theta": 10000,
    "rope_impl": "dail",
    "rope_dail_config": {"type": "original", "pos_idx_in_fp32": True, "xpos_scale_base": 512},
    "rope_hf_config": {"type": "no_scaling", "factor": 1.0},
    # Queries are scaled by log(floor((pos + 1) / floor_scale) + 1) * attn_scale + 1; off at 0.
    "attn_temperature_tuning": {"floor_scale": 8192, "attn_scale": 0.0},
    "kv_n_heads": None,
    "fused_qkv": True,
}

FFN_CONFIG_DEFAULTS: dict[str, Any] = {"ffn_type": "mptmlp"}

INIT_CONFIG_DEFAULTS: dict[str, Any] = {
    "name": "kaiming_normal_",
    "fan_mode": "fan_in",
    "init_nonlinearity": "relu",
    "init_div_is_residual": True,
    "emb_init_std": None,
    "emb_init_uniform_lim": None,
    "init_std": None,
    "init_gain": 0.0,
}

# The type of each nested key, for the run-config checker (``llmfoundry.utils.config_checks``):
# a YAML value of another type (``qk_ln: maybe``) fails there, naming the key. Plug-in layers'
# own keys (an ``ffn_config`` of a plug-in FFN) are not listed and go unchecked. The MoE keys of
# ``ffn_config`` are typed by ``moe_options.MOE_CONFIG_TYPES`` and checked when ``MPTConfig`` is
# built (``moe_config.merge_ffn_config``; this file cannot import them: moe_options imports it).
ATTN_CONFIG_TYPES: dict[str, Any] = {
    "attn_type": str,
    "attn_pdrop": float,
    "attn_impl": str,
    "qk_ln": bool,
    "qk_gn": bool,
    "clip_qkv": float | None,
    "softmax_scale": float | None,
    "attn_uses_sequence_id": bool,
    "sliding_window_size": int | None,
    "attn_logit_softcapping": float | None,
    "alibi": bool,
    "alibi_bias_max": int,
    "rope": bool,
    "nope": bool,
    "rope_theta": float,
    "rope_impl": str,
    "rope_dail_config": dict[str, Any],
    "rope_hf_config": dict[str, Any],
    "attn_temperature_tuning": dict[str, Any] | None,
    "kv_n_heads": int | None,
    "fused_qkv": bool,
}

FFN_CONFIG_TYPES: dict[str, Any] = {
    "ffn_type": str,
    "ffn_act_fn": str | dict[str, Any] | None,
    "ffn_hidden_size": int | None,
    "expansion_ratio": float,
}

INIT_CONFIG_TYPES: dict[str, Any] = {
    "name": str,
    "fan_mode": str,
    "init_nonlinearity": str,
    "init_div_is_residual": bool | int | float | str,
    "emb_init_std": float | None,
    "emb_init_uniform_lim": float | list[float] | None,
    "init_std": float | None,
    "init_gain": float,
}

ATTN_TYPES = BUILTIN_NAMES["attention_classes"]
ATTN_IMPLS = BUILTIN_NAMES["attention_implementations"]
FLEX_IMPLS = ("triton", "flex")
ROPE_IMPLS = ("dail", "hf")
NORM_TYPES = BUILTIN_NAMES["norms"]
FFN_TYPES = (
    *BUILTIN_NAMES["ffns"],
    *BUILTIN_NAMES["ffns_with_norm"],
    *BUILTIN_NAMES["ffns_with_megablocks"],
)
INIT_NAMES = BUILTIN_NAMES["param_init_fns"]
# What torch's kaiming_uniform_ / kaiming_normal_ take as ``mode`` and ``nonlinearity`` (the
# names torch.nn.init.calculate_gain knows).
FAN_MODES = ("fan_in", "fan_out")
KAIMING_NONLINEARITIES = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
)
INIT_DEVICES = ("cpu", "meta", "mixed")  # = utils.constants.INIT_DEVICES (this file is exported)
FC_TYPES = BUILTIN_NAMES["fcs"]
ROPE_HF_TYPES = ("no_scaling", "linear", "dynamic")
ROPE_DAIL_TYPES = ("original", "xpos")

# Keys every ``PretrainedConfig`` writes; transformers' native MPT saves its ``attn_config`` as a
# config object, so a native config.json carries these inside ``attn_config`` too. They mean
# nothing to attention and are dropped on load.
PRETRAINED_CONFIG_KEYS = frozenset(PretrainedConfig().to_dict()) | {"_name_or_path"}

# Keys that published MPT configs carry but that select nothing here (mosaicml/mpt-7b has
# ``attn_config.prefix_lm: false``; LLM Foundry exports copy ``fc_type`` into ``ffn_config`` and
# write ``attn_config.kv_dim: null``). Each is accepted at these inert values only, then dropped.
LEGACY_INERT_KEYS: dict[str, dict[str, tuple[Any, ...]]] = {
    "attn_config": {"prefix_lm": (False,), "kv_dim": (None,)},
    "ffn_config": {"fc_type": ("torch", {"name": "torch"})},
    "init_config": {},
}


class MPTConfigError(ValueError):
    """An MPTConfig field (or a combination of fields) that the model cannot run with."""


def merge_defaults(
    name: str, given: dict[str, Any] | None, defaults: dict[str, Any], *, open_keys: bool = False
) -> dict[str, Any]:
    """Fill the missing keys of a nested config from its defaults; unknown keys are an error.

    Args:
        name: the nested config's key, for error messages (``attn_config``, ...).
        given: what the user set (or None).
        defaults: the defaults for every known key.
        open_keys: keep unknown keys instead of refusing them (the options of a plug-in layer).

    Returns:
        A new dict with every key of ``defaults``.

    Raises:
        MPTConfigError: if ``given`` has a key that ``defaults`` does not know (legacy keys of
            ``LEGACY_INERT_KEYS`` are accepted at their inert value and dropped).
    """
    merged = copy.deepcopy(defaults)
    inert = LEGACY_INERT_KEYS[name]
    for key, value in (given or {}).items():
        if name == "attn_config" and key in PRETRAINED_CONFIG_KEYS and key not in defaults:
            continue
        if key in inert and key not in defaults:
            if value not in inert[key]:
                raise MPTConfigError(
                    f"model.{name}.{key}={value!r} is not supported; "
                    f"only {' or '.join(repr(v) for v in inert[key])} is accepted"
                )
            continue
        if key not in defaults and not open_keys:
            known = ", ".join(sorted(defaults))
            close = difflib.get_close_matches(str(key), list(defaults), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise MPTConfigError(
                f"model.{name}.{key} is not a known key; {hint}valid keys: {known}"
            )
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            merged[key] = {**defaults[key], **value}
        else:
            merged[key] = value
    return merged


def fc_type_name(fc_type: str | dict[str, Any]) -> str:
    """``fc_type`` as a name: LLM Foundry writes it either as ``torch`` or as ``{name: torch}``."""
    if isinstance(fc_type, dict):
        if set(fc_type) != {"name"}:
            raise MPTConfigError(
                f"model.fc_type={fc_type!r}: only the 'name' key is supported (e.g. {{name: torch}})"
            )
        return fc_type["name"]
    return fc_type


# The numbers with a range, as (section, key, low, high, low_open): the value must lie in
# ``[low, high]`` (``(low, high]`` when ``low_open``; no upper bound when ``high`` is None).
# ``section`` is a nested config, or "" for a field of the model itself; a None value (where
# the key allows it) and a value of another type (the config check reports those) pass here.
NUMBER_RANGES: tuple[tuple[str, str, float, float | None, bool], ...] = (
    ("", "resid_pdrop", 0, 1, False),
    ("", "emb_pdrop", 0, 1, False),
    ("", "embedding_fraction", 0, 1, True),
    ("", "final_logit_softcapping", 0, None, True),
    ("", "norm_eps", 0, None, False),
    ("attn_config", "attn_pdrop", 0, 1, False),
    ("attn_config", "attn_logit_softcapping", 0, None, True),
    ("attn_config", "clip_qkv", 0, None, True),
    ("attn_config", "softmax_scale", 0, None, True),
    ("attn_config", "alibi_bias_max", 0, None, True),
    ("attn_config", "rope_theta", 0, None, True),
    ("init_config", "init_std", 0, None, False),
    ("init_config", "emb_init_std", 0, None, False),
)


def check_number_ranges(fields: dict[str, Any]) -> None:
    """Check the :data:`NUMBER_RANGES` keys of a model's fields (nested configs merged).

    Raises:
        MPTConfigError: ``model.attn_config.clip_qkv=-1 must be a positive number``.
    """
    for section, key, low, high, low_open in NUMBER_RANGES:
        value = (fields.get(section) or {}).get(key) if section else fields.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        above = value > low if low_open else value >= low
        if above and (high is None or value <= high):
            continue
        if high is None:
            allowed = "a positive number" if low_open else "a non-negative number"
        else:
            allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
        path = f"{section}.{key}" if section else key
        raise MPTConfigError(f"model.{path}={value} must be {allowed}")
