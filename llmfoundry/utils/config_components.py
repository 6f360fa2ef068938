"""Check a config section against the signature it is passed to: ``{name: ..., **kwargs}``
sections against their registry entry, ``{entry_name: kwargs}`` sections (``callbacks``,
``loggers``, ``algorithms``) entry by entry, any other section against its constructor
(``compile_config`` against ``torch.compile``). Values go through
:func:`llmfoundry.utils.config_checks.check_value`, so every failure is one line with the full
key path (``callbacks.speed_monitor.window_size``).
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Mapping, Sequence
from typing import Any, cast

from llmfoundry.registry import Registry
from llmfoundry.utils.composer_ranges import range_hints
from llmfoundry.utils.config_checks import (
    check_value,
    parameter_hints,
    shown,
    unknown_key_error,
)
from llmfoundry.utils.exceptions import ConfigError, did_you_mean

__all__ = [
    "accepted_kwargs",
    "check_call_keys",
    "check_call_kwargs",
    "check_component",
    "check_named_components",
    "keyword_parameters",
    "lookup",
    "positional_names",
]


# Composer's Callback and Algorithm base classes take and drop any argument (a stub signature
# for type checkers), so a subclass without its own ``__init__`` (``nan_monitor``) takes none.
_DISCARDING_INITS = frozenset(
    {"composer.core.callback.Callback.__init__", "composer.core.algorithm.Algorithm.__init__"}
)


def _discards_arguments(func: Any) -> bool:
    init = func.__init__ if isinstance(func, type) else None
    return f"{getattr(init, '__module__', '')}.{getattr(init, '__qualname__', '')}" in (
        _DISCARDING_INITS
    )


def keyword_parameters(
    func: Any, reserved: Collection[str] = ()
) -> tuple[dict[str, inspect.Parameter], bool] | None:
    """The parameters of ``func`` a config key can set, and whether it also takes ``**kwargs``.

    Args:
        func: a function, or a class (its ``__init__``'s parameters).
        reserved: parameters the caller fills itself, left out.

    Returns:
        The keyword-passable parameters by name and whether ``func`` takes any keyword, or
        None when ``func`` has no readable signature (some builtins).
    """
    if _discards_arguments(func):
        return {}, False
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    params = {
        name: p
        for name, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in reserved
    }
    return params, any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())


def positional_names(func: Any, count: int) -> set[str]:
    """The names of the first ``count`` parameters of ``func`` that a builder's positional
    arguments fill (and that the config may therefore not set)."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return set()
    return {p.name for p in params[:count] if p.kind is p.POSITIONAL_OR_KEYWORD}


def accepted_kwargs(func: Any) -> set[str] | None:
    """The keyword names ``func`` accepts, or None if it takes ``**kwargs`` (anything goes)."""
    found = keyword_parameters(func)
    if found is None or found[1]:
        return None
    return set(found[0])


def check_call_keys(
    func: Any, kwargs: Mapping[str, Any], path: str, reserved: Collection[str] = ()
) -> dict[str, inspect.Parameter]:
    """Check a section's keys (not their values) against the signature they are passed to.

    Args:
        func: the constructor or function the section's keys become keyword arguments of.
        kwargs: the section's keys (without ``name``).
        path: the section's key path, for messages (``optimizer``, ``callbacks.speed_monitor``).
        reserved: parameters the builder fills (``params``, ``tokenizer``); the config may not.

    Returns:
        The parameters the config may set, by name (empty for a signature that cannot be read).

    Raises:
        ConfigError: naming an unknown key (with the valid ones) or a required parameter the
            section lacks.
    """
    found = keyword_parameters(func, reserved)
    if found is None:
        return {}
    params, takes_any = found
    for key in kwargs:
        if key not in params and not takes_any:
            raise unknown_key_error(path, str(key), params)
    for name, param in params.items():
        if param.default is param.empty and name not in kwargs:
            raise ConfigError(f"{path}.{name} is missing; it is required (add {name}: <value>)")
    return params


def check_call_kwargs(
    func: Any, kwargs: Mapping[str, Any], path: str, reserved: Collection[str] = ()
) -> None:
    """:func:`check_call_keys`, then each value against its parameter's annotation (narrowed
    by :mod:`~llmfoundry.utils.composer_ranges`), then ``func``'s own
    ``check_before_build(**kwargs)`` where it has one: a component whose constructor checks more
    than its signature states (``generate_callback``'s ``model.generate`` keys) has one, most
    by subclassing :class:`~llmfoundry.interfaces.CheckedByBuilding`, so that those checks run
    before anything is built.

    Raises:
        ConfigError: as :func:`check_call_keys`, or naming a value whose type does not fit
            (``callbacks.speed_monitor.window_size must be a positive int, got int 0``).
    """
    params = check_call_keys(func, kwargs, path, reserved)
    hints = parameter_hints(func) | range_hints(func)
    for key, value in kwargs.items():
        if key in params and key in hints:
            check_value(value, hints[key], f"{path}.{key}")
    own_check = getattr(func, "check_before_build", None)
    if callable(own_check):
        own_check(**kwargs)


def lookup(registry: Registry[Any], path: str, name: Any) -> Any:
    """``registry``'s entry ``name``, failing with the key path that named it.

    Raises:
        ConfigError: ``<path>: '<name>' is not a registered entry ...`` with the known names.
    """
    if not isinstance(name, str):
        raise ConfigError(
            f"{path} must be str (a name in the '{registry.name}' registry), got "
            f"{type(name).__name__} {shown(name)}"
        )
    try:
        return registry.get(name)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def check_component(
    registry: Registry[Any], path: str, section: Any, reserved: Collection[str] = ()
) -> Any:
    """Check a ``{name: ..., **kwargs}`` section against its registry entry's signature.

    Returns:
        The registry entry.

    Raises:
        ConfigError: on a section that is not a mapping, a missing or unknown ``name``, or a
            key the entry does not take (see :func:`check_call_kwargs`).
    """
    if not isinstance(section, Mapping):
        raise ConfigError(
            f"{path} must be a mapping with a name key, got {type(section).__name__} "
            f"{shown(section)}"
        )
    if "name" not in section:
        raise ConfigError(
            f"{path}.name is missing; it names an entry of the '{registry.name}' registry"
        )
    entry = lookup(registry, f"{path}.name", section["name"])
    kwargs = {str(k): v for k, v in section.items() if k != "name"}
    check_call_kwargs(entry, kwargs, path, reserved)
    return entry


def entry_kwargs(where: str, kwargs: object) -> dict[str, Any]:
    """The keyword arguments of a ``{entry_name: kwargs}`` section's entry (empty for none).

    Raises:
        ConfigError: naming ``where`` if they are not a mapping.
    """
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"{where} must be a mapping of keyword arguments (or empty)")
    return dict(cast(Mapping[str, Any], kwargs))


def check_named_components(
    registries: Sequence[tuple[Registry[Any], bool]],
    path: str,
    section: Mapping[str, Any] | None,
) -> None:
    """Check a ``{entry_name: kwargs}`` section (``callbacks``, ``loggers``, ``algorithms``).

    Args:
        registries: where an entry name may be found, each with whether its builder fills
            the entry's first parameter (a ``callbacks_with_config`` entry's run config).
        path: the section's key, for messages.
        section: the section, or None.

    Raises:
        ConfigError: on an unknown entry name, an entry whose value is not a mapping, or an
            unknown or ill-typed keyword argument (``callbacks.speed_monitor.window_size``).
    """
    known = [name for registry, _ in registries for name in registry.get_all()]
    for name, kwargs in (section or {}).items():
        where = f"{path}.{name}"
        options = entry_kwargs(where, kwargs)
        found = [(reg, res) for reg, res in registries if name in reg]
        if not found:
            raise ConfigError(
                f"{where}: '{name}' is not a registered entry of the "
                f"'{registries[0][0].name}' registry{did_you_mean(str(name), known)} "
                f"(known: {', '.join(sorted(known))})"
            )
        registry, fills_first = found[0]
        entry = registry.get(name)
        reserved = positional_names(entry, 1) if fills_first else set()
        check_call_kwargs(entry, options, where, reserved)
