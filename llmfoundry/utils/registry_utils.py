"""Build a component from a registry entry and a config section, checking its keys."""

from __future__ import annotations

import inspect
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from llmfoundry.registry import Registry
from llmfoundry.utils.config_checks import unknown_key_error
from llmfoundry.utils.exceptions import ConfigError


def accepted_kwargs(func: Any) -> set[str] | None:
    """The keyword names ``func`` accepts, or None if it takes ``**kwargs`` (anything goes)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    names: set[str] = set()
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.add(param.name)
    return names


def check_kwargs(
    func: Any, kwargs: Mapping[str, Any], section: str, reserved: set[str] | None = None
) -> None:
    """Fail on a key of ``kwargs`` that ``func`` does not take.

    Args:
        func: the constructor the section's keys are passed to.
        kwargs: the section's keys.
        section: the key path of the section, for the message (``optimizer``).
        reserved: names filled by the builder rather than the config (e.g. ``params``).

    Raises:
        ConfigError: naming the unknown key and the closest accepted one.
    """
    accepted = accepted_kwargs(func)
    if accepted is None:
        return
    check_keys(kwargs, accepted - (reserved or set()), section)


def check_keys(keys: Iterable[Any], allowed: Collection[str], section: str) -> None:
    """Fail on a key that is not in ``allowed``.

    Args:
        keys: the keys of a config section.
        allowed: the keys it may have.
        section: the key path of the section, for the message (``fsdp_config``).

    Raises:
        ConfigError: naming the unknown key, the closest allowed one and all of them.
    """
    for key in keys:
        if key not in allowed:
            raise unknown_key_error(section, str(key), allowed)


def construct_from_registry(
    registry: Registry[Any],
    key_path: str,
    config: Mapping[str, Any],
    *args: Any,
    reserved: set[str] | None = None,
    **extra: Any,
) -> Any:
    """Look ``config['name']`` up in ``registry`` and call it with the remaining keys.

    Args:
        registry: where to look the name up.
        key_path: the key path of the section, for messages (``scheduler``, ``callbacks.lr_monitor``).
        config: the section, with a ``name`` key.
        *args: positional arguments the builder supplies (e.g. the model's parameters).
        reserved: keyword names supplied by the builder in ``extra``; the config may not set them.
        **extra: keyword arguments the builder supplies.

    Returns:
        Whatever the entry returns.

    Raises:
        ConfigError: on a missing ``name``, an unknown name or an unknown key.
    """
    if "name" not in config:
        raise ConfigError(
            f"{key_path}.name is missing; it names an entry of the '{registry.name}' registry"
        )
    kwargs = {k: v for k, v in config.items() if k != "name"}
    func = registry.get(str(config["name"]))
    check_kwargs(func, kwargs, key_path, reserved=(reserved or set()) | set(extra))
    try:
        inspect.signature(func).bind(*args, **kwargs, **extra)
    except TypeError as err:
        # A required argument the config did not give.
        raise ConfigError(f"{key_path} ({config['name']}): {err}") from err
    except ValueError:
        pass  # no introspectable signature (some builtins): let the call itself decide
    return func(*args, **kwargs, **extra)
