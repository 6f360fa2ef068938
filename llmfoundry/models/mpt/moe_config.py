"""``MPTConfig.ffn_config``: its defaults, and the MoE keys of ``torch_dmoe``/``mb_moe``/``mb_dmoe``.

An MoE ``ffn_type`` takes the MegaBlocks keys of ``moe_options.MOE_CONFIG_DEFAULTS`` besides
``ffn_act_fn`` and ``ffn_hidden_size``; every missing one is filled in (and saved in
config.json). Their types are checked here (``MOE_CONFIG_TYPES``) and their values by
``moe_options`` when the config is built, so a bad value fails before any model exists.

This file ships inside exported checkpoints: no torch.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

from .config_defaults import FFN_CONFIG_DEFAULTS, MPTConfigError, merge_defaults
from .config_layers import is_builtin_name
from .moe_options import MOE_CONFIG_DEFAULTS, MOE_CONFIG_TYPES, MOE_FFN_TYPES, moe_options

# The keys every built-in FFN takes.
BASE_FFN_DEFAULTS: dict[str, Any] = {
    **FFN_CONFIG_DEFAULTS,
    "ffn_act_fn": None,
    "ffn_hidden_size": None,
}


def is_moe(ffn_config: Mapping[str, Any]) -> bool:
    """Whether ``ffn_config`` selects a mixture-of-experts FFN (``MOE_FFN_TYPES``)."""
    return ffn_config.get("ffn_type") in MOE_FFN_TYPES


def merge_ffn_config(ffn_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``ffn_config`` with its defaults filled in (the MoE keys' too, for an MoE ``ffn_type``).

    Raises:
        MPTConfigError: naming an unknown key (a plug-in FFN's keys are its own and pass), or an
            MoE key whose value has the wrong type.
    """
    given = dict(ffn_config or {})
    # LLM Foundry lets ffn_config.expansion_ratio override the model's; it has no default here,
    # so that config.json holds it only when set (LLM Foundry's loader cannot take a null).
    own_ratio = (
        {"expansion_ratio": given.pop("expansion_ratio")} if "expansion_ratio" in given else {}
    )
    ffn_type = given.get("ffn_type", FFN_CONFIG_DEFAULTS["ffn_type"])
    moe = ffn_type in MOE_FFN_TYPES
    merged = merge_defaults(
        "ffn_config",
        given,
        {**BASE_FFN_DEFAULTS, **MOE_CONFIG_DEFAULTS} if moe else BASE_FFN_DEFAULTS,
        # A plug-in FFN receives the ffn_config keys as its own options.
        open_keys=not is_builtin_name("ffn_config.ffn_type", ffn_type),
    )
    if moe:
        for key, hint in MOE_CONFIG_TYPES.items():
            if not _has_type(merged[key], hint):
                raise MPTConfigError(
                    f"model.ffn_config.{key}={merged[key]!r} has the wrong type; "
                    f"expected {_type_name(hint)}"
                )
    return {**merged, **own_ratio}


def check_moe_config(ffn_config: Mapping[str, Any], d_model: int, expansion_ratio: float) -> None:
    """Check an MoE ``ffn_config``'s values (nothing for another ``ffn_type``).

    Raises:
        MPTConfigError: naming the key of a value out of range or a MegaBlocks feature that is
            not implemented here.
    """
    if is_moe(ffn_config):
        moe_options(ffn_config, d_model, expansion_ratio)


def _has_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as a YAML or JSON file gives it) fits the annotation ``hint``."""
    if isinstance(hint, types.UnionType):
        return any(_has_type(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # YAML writes 1 for 1.0
        return isinstance(value, int | float) and not isinstance(value, bool)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list | tuple) and all(_has_type(v, item) for v in value)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if isinstance(hint, types.UnionType):
        return " or ".join(_type_name(option) for option in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    return hint.__name__
