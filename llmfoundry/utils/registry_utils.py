"""Build a component from a registry entry and a config section, checking its keys."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

from llmfoundry.registry import Registry
from llmfoundry.utils.config_checks import unknown_key_error
from llmfoundry.utils.config_components import check_call_keys, positional_names
from llmfoundry.utils.exceptions import ConfigError, UserError, first_line


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
        ConfigError: on a missing ``name``, an unknown name, an unknown key or a missing
            required one (see :func:`~llmfoundry.utils.config_components.check_call_keys`).
    """
    if "name" not in config:
        raise ConfigError(
            f"{key_path}.name is missing; it names an entry of the '{registry.name}' registry"
        )
    kwargs = {k: v for k, v in config.items() if k != "name"}
    func = registry.get(str(config["name"]))
    filled = positional_names(func, len(args)) | set(extra) | (reserved or set())
    check_call_keys(func, kwargs, key_path, reserved=filled)
    return func(*args, **kwargs, **extra)


@contextlib.contextmanager
def constructor_errors_at(key_path: str) -> Iterator[None]:
    """Turn a ``TypeError``/``ValueError`` a light constructor raises (a Composer callback or
    scheduler refusing its arguments: ``ema``'s half_life together with smoothing) into a
    one-line :class:`ConfigError` naming ``key_path``; the original stays as its cause.

    Only for components whose constructors just store and check their arguments: in a model's
    build such an error is more likely a bug, and keeps its traceback.
    """
    try:
        yield
    except UserError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key_path}: {first_line(err)}") from err
