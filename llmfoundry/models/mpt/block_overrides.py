"""``block_overrides``: per-layer attention settings, with LLM Foundry's schema.

::

    block_overrides:
      order:                      # the layers, in order; expands to exactly n_layers names
      - name: default             # "default": the model's own attn_config
      - repeat: 2                 # a nested order, repeated
        order:
        - name: local
        - name: local_reuse
      overrides:
        local:
          attn_config: {sliding_window_size: 64}
        local_reuse:
          attn_config: {sliding_window_size: 64, reuse_kv_layer_idx: -1}

An override may set these ``attn_config`` keys only: ``sliding_window_size``, ``nope`` (no
position encoding in that layer: neither RoPE nor ALiBi), ``attn_temperature_tuning``
(``floor_scale``, ``attn_scale``), ``reuse_kv_layer_idx`` (attend with the keys and values of
an earlier layer, given relative to this one, e.g. ``-1``; the layer then has no key/value
projections and adds nothing to the KV cache) and ``reuse_kv_x_layer_idx`` (compute keys and
values from the input of an earlier layer; needs ``fused_qkv: false``). An optional top-level
``repeat`` repeats the whole order.

This file ships inside exported checkpoints: standard library only (and its siblings).
"""

from __future__ import annotations

import copy
from typing import Any

from .config_defaults import MPTConfigError

REUSE_KEYS = ("reuse_kv_layer_idx", "reuse_kv_x_layer_idx")
ALLOWED_ATTN_OVERRIDES = ("sliding_window_size", "nope", "attn_temperature_tuning", *REUSE_KEYS)
_TEMPERATURE_KEYS = ("floor_scale", "attn_scale")
_WHERE = "model.block_overrides"


def _expand_order(order: Any, overrides: dict[str, Any], where: str) -> list[str]:
    """The layer names an ``order`` list stands for, repeats expanded."""
    if not isinstance(order, list):
        raise MPTConfigError(f"{where} must be a list of {{name: ...}} or {{order: [...]}} items")
    names: list[str] = []
    for index, item in enumerate(order):
        at = f"{where}[{index}]"
        if not isinstance(item, dict) or ("name" in item) == ("order" in item):
            raise MPTConfigError(f"{at} must have exactly one of 'name' or 'order'")
        repeat = item.get("repeat", 1)
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
            raise MPTConfigError(f"{at}.repeat={repeat!r} must be a positive integer")
        if "name" in item:
            name = item["name"]
            if name != "default" and name not in overrides:
                known = ", ".join(["default", *overrides])
                raise MPTConfigError(
                    f"{at}.name={name!r} is not defined in {_WHERE}.overrides; known: {known}"
                )
            names.extend([name] * repeat)
        else:
            names.extend(_expand_order(item["order"], overrides, f"{at}.order") * repeat)
    return names


def _check_override(name: str, override: Any) -> dict[str, Any]:
    """An override's ``attn_config``, after checking it sets only overridable keys."""
    where = f"{_WHERE}.overrides.{name}"
    if not isinstance(override, dict) or set(override) - {"attn_config"}:
        raise MPTConfigError(f"{where} may only set attn_config (got {override!r})")
    attn = override.get("attn_config") or {}
    unknown = sorted(set(attn) - set(ALLOWED_ATTN_OVERRIDES))
    if unknown:
        raise MPTConfigError(
            f"{where}.attn_config.{unknown[0]} cannot be overridden per layer; "
            f"overridable keys: {', '.join(ALLOWED_ATTN_OVERRIDES)}"
        )
    tuning = attn.get("attn_temperature_tuning")
    if isinstance(tuning, dict) and set(tuning) - set(_TEMPERATURE_KEYS):
        raise MPTConfigError(
            f"{where}.attn_config.attn_temperature_tuning takes {', '.join(_TEMPERATURE_KEYS)} only"
        )
    if all(attn.get(key) is not None for key in REUSE_KEYS):
        raise MPTConfigError(f"{where}.attn_config sets both {' and '.join(REUSE_KEYS)}; pick one")
    return attn


def _absolute_source(
    key: str, relative: Any, layer: int, resolved: dict[int, int], where: str
) -> int:
    """The earlier layer a ``reuse_*`` index of ``layer`` points at, following reuse chains."""
    if not isinstance(relative, int) or isinstance(relative, bool) or relative >= 0:
        raise MPTConfigError(
            f"{where}.{key}={relative!r} must be a negative index relative to the layer (e.g. -1)"
        )
    source = layer + relative
    if source < 0:
        raise MPTConfigError(
            f"{where}.{key}={relative} points before the first layer (from layer {layer})"
        )
    # A layer that reuses a reusing layer reuses that layer's source.
    source = resolved.get(source, source)
    resolved[layer] = source
    return source


def layer_attn_configs(
    block_overrides: dict[str, Any] | None, attn_config: dict[str, Any], n_layers: int
) -> list[dict[str, Any]]:
    """Each layer's ``attn_config``: the model's, with the layer's override applied.

    Every returned dict also has ``reuse_kv_layer_idx`` and ``reuse_kv_x_layer_idx``, as the
    absolute index of the layer whose keys/values (or input) are reused, or None.

    Raises:
        MPTConfigError: on a malformed ``block_overrides`` (naming the offending key).
    """
    base = {**copy.deepcopy(attn_config), **dict.fromkeys(REUSE_KEYS)}
    if block_overrides is None:
        return [copy.deepcopy(base) for _ in range(n_layers)]
    if not isinstance(block_overrides, dict) or not {"order", "overrides"} <= set(block_overrides):
        raise MPTConfigError(f"{_WHERE} must have both 'order' and 'overrides'")
    overrides = block_overrides["overrides"] or {}
    if "default" in overrides:
        raise MPTConfigError(f"{_WHERE}.overrides cannot define 'default' (it names no override)")
    attn_overrides = {name: _check_override(name, value) for name, value in overrides.items()}
    repeat = block_overrides.get("repeat", 1)
    names = _expand_order(block_overrides["order"], overrides, f"{_WHERE}.order") * repeat
    if len(names) != n_layers:
        raise MPTConfigError(
            f"{_WHERE}.order expands to {len(names)} layers but the model has n_layers={n_layers}"
        )
    resolved: dict[str, dict[int, int]] = {key: {} for key in REUSE_KEYS}
    layers: list[dict[str, Any]] = []
    for layer, name in enumerate(names):
        layer_config = copy.deepcopy(base)
        for key, value in attn_overrides.get(name, {}).items():
            where = f"{_WHERE}.overrides.{name}.attn_config"
            if key in REUSE_KEYS and value is not None:
                value = _absolute_source(key, value, layer, resolved[key], where)
            elif key == "attn_temperature_tuning" and isinstance(value, dict):
                value = {**(base[key] or {}), **value}
            layer_config[key] = value
        layers.append(layer_config)
    return layers
