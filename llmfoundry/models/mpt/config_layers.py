"""Checking the layer names of an MPT config, and recording where outside layers come from.

A config names its layers by ``norm_type``, ``fc_type``, ``ffn_config.ffn_type``,
``attn_config.attn_type``, ``attn_config.attn_impl`` and ``init_config.name``. A built-in name
needs nothing; any other name must be provided by a plug-in (see :mod:`.layer_table`), and the
config records in ``layer_sources`` which module and distribution provided it. That record is
saved in config.json, so a folder whose model needs a plug-in says which package to install.

This file ships inside exported checkpoints.
"""

from __future__ import annotations

from typing import Any

from .config_defaults import MPTConfigError
from .layer_table import BUILTIN_NAMES, FFN_KINDS, is_builtin, layer_source, lookup_layer

# Config key -> the layer kinds its name is looked up in.
LAYER_KEYS: dict[str, tuple[str, ...]] = {
    "norm_type": ("norms",),
    "fc_type": ("fcs",),
    "ffn_config.ffn_type": FFN_KINDS,
    "attn_config.attn_type": ("attention_classes",),
    "attn_config.attn_impl": ("attention_implementations",),
    "init_config.name": ("param_init_fns",),
}


def is_builtin_name(key: str, name: str) -> bool:
    """Whether the value ``name`` of the config key ``key`` is a built-in layer."""
    return any(is_builtin(kind, name) for kind in LAYER_KEYS[key])


def _missing_message(key: str, name: str, recorded: dict[str, Any] | None) -> str:
    """The one-line error for a layer name nothing provides."""
    if recorded and recorded.get("name") == name:
        package = recorded.get("distribution") or recorded.get("module")
        return (
            f"model.{key}={name!r} is a layer of the package {package!r} (module "
            f"{recorded.get('module')}), which is not installed here; install it "
            f"(pip install {package}) to build this model"
        )
    builtins = [n for kind in LAYER_KEYS[key] for n in BUILTIN_NAMES[kind]]
    groups = " or ".join(f"llmfoundry_{kind}" for kind in LAYER_KEYS[key])
    return (
        f"model.{key}={name!r} is not supported; choose one of {', '.join(builtins)}, or install "
        f"a plug-in that registers it (entry-point group {groups})"
    )


def resolve_layer_sources(
    names: dict[str, str], recorded: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Check every layer name of a config; return where its non-built-in layers come from.

    Args:
        names: config key (see ``LAYER_KEYS``) -> the layer name the config gives.
        recorded: the ``layer_sources`` the config was saved with, if any: when a plug-in is
            missing, its record names the package to install.

    Returns:
        ``layer_sources``: config key -> ``{kind, name, module, distribution}`` for each
        layer that is not built in.

    Raises:
        MPTConfigError: naming the key (and the package, when recorded) of a layer name
            that nothing provides.
    """
    sources: dict[str, dict[str, Any]] = {}
    for key, name in names.items():
        if is_builtin_name(key, name):
            continue
        for kind in LAYER_KEYS[key]:
            layer = lookup_layer(kind, name)
            if layer is not None:
                sources[key] = {"kind": kind, "name": name, **layer_source(kind, name, layer)}
                break
        else:
            raise MPTConfigError(_missing_message(key, name, (recorded or {}).get(key)))
    return sources


def find_layer(key: str, name: str) -> tuple[str, Any]:
    """The kind and the layer (class or builder) a config's ``key: name`` selects.

    Raises:
        MPTConfigError: if nothing provides it (a config that passed validation always finds it).
    """
    kinds = LAYER_KEYS[key]
    builtin_kinds = [kind for kind in kinds if is_builtin(kind, name)]
    for kind in builtin_kinds or kinds:
        layer = lookup_layer(kind, name)
        if layer is not None:
            return kind, layer
    raise MPTConfigError(_missing_message(key, name, None))
