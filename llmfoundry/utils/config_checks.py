"""One checker for config values: a value against a type annotation, a section against the
signature it is passed to, each failure reported in one line with the full key path
(``model.attn_config.qk_ln``) and what the key allows.

The annotations come from what already describes a section: the run config dataclasses
(``TrainConfig``), a constructor's signature (an optimizer, a callback, a dataset) or a table
of typed defaults (MPT's ``attn_config``). ``Annotated[..., TIME]`` marks a Composer time
(``10ba``, ``2ep``) and ``Annotated[..., POSITIVE]`` a number that must be above zero.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml

from llmfoundry.registry import Registry
from llmfoundry.utils.exceptions import ConfigError, did_you_mean

__all__ = [
    "POSITIVE",
    "TIME",
    "check_call_kwargs",
    "check_component",
    "check_fields",
    "check_named_components",
    "check_value",
    "describe",
    "is_time_string",
]


@dataclasses.dataclass(frozen=True)
class Marker:
    """A constraint carried by ``Annotated`` beyond the type: ``TIME`` or ``POSITIVE``."""

    name: str


TIME = Marker("time")
POSITIVE = Marker("positive")

TIME_HINT = "a time string (a number and a unit: 10ba, 2ep, 1000tok, 500sp or 0.5dur)"


def is_time_string(text: str) -> bool:
    """Whether Composer reads ``text`` as a time (``10ba``, ``2ep``, ``0.5dur``, ``1h30m``).

    A string without a unit is refused, although Composer reads ``"3"`` as 30 seconds.
    """
    from composer.core.time import Time

    if not any(char.isalpha() for char in text):
        return False
    try:
        Time.from_timestring(text)
    except ValueError:
        return False
    return True


def _is_time_class(annotation: Any) -> bool:
    """Whether ``annotation`` is Composer's ``Time`` (or ``Time[int]``), without importing it."""
    cls = typing.get_origin(annotation) or annotation
    return getattr(cls, "__name__", None) == "Time" and str(
        getattr(cls, "__module__", "")
    ).startswith("composer")


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _enum_names(cls: type[enum.Enum]) -> list[str]:
    return [str(member.value) for member in cls]


def _matches_container(value: Any, origin: Any, args: tuple[Any, ...]) -> bool:
    """``_matches`` for ``dict[...]``, ``list[...]`` and ``tuple[...]`` annotations."""
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            return False
        return not args or all(_matches(v, args[-1]) for v in value.values())
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return not args or all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(
            _matches(v, a) for v, a in zip(value, args, strict=True)
        )
    if not isinstance(value, list | tuple):
        return False
    return not args or all(_matches(v, args[0]) for v in value)


def _matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` (as a YAML gives it) fits ``annotation``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or isinstance(annotation, str | typing.TypeVar | typing.ForwardRef):
        return True
    if origin is Annotated:
        return _matches(value, args[0]) and all(
            _holds(value, marker) for marker in args[1:] if isinstance(marker, Marker)
        )
    if _is_union(annotation):
        if any(_is_time_class(arg) for arg in args) and isinstance(value, str):
            return is_time_string(value)
        return any(_matches(value, arg) for arg in args)
    if annotation is None or annotation is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if _is_time_class(annotation):
        return isinstance(value, str) and is_time_string(value)
    if origin in (dict, Mapping, list, Sequence, tuple, Collection):
        return _matches_container(value, origin, args)
    if origin is Callable or annotation is Callable:
        return True  # not something a YAML writes; the constructor decides
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return isinstance(value, annotation) or str(value) in _enum_names(annotation)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _holds(value: Any, marker: Marker) -> bool:
    """Whether ``value`` satisfies a ``TIME`` or ``POSITIVE`` marker."""
    if marker is TIME:
        return not isinstance(value, str) or is_time_string(value)
    if marker is POSITIVE:
        return not isinstance(value, int | float) or value > 0
    return True


_NAMES: dict[Any, str] = {
    bool: "bool (true or false)",
    int: "int",
    float: "float",
    str: "str",
    type(None): "null",
}


def describe(annotation: Any) -> str:
    """What ``annotation`` allows, in words: ``int or null``, ``one of 'a', 'b'``, ..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        base = describe(args[0])
        if TIME in args[1:]:
            return f"{base.replace('str', TIME_HINT)}"
        if POSITIVE in args[1:]:
            return f"a positive {base}"
        return base
    if _is_union(annotation):
        if any(_is_time_class(arg) for arg in args):
            plain = [describe(a) for a in args if not _is_time_class(a) and a is not str]
            return " or ".join(dict.fromkeys([*plain, TIME_HINT]))
        yaml_args = [a for a in args if _yaml_writable(a)] or list(args)
        return " or ".join(dict.fromkeys(describe(a) for a in yaml_args))
    if annotation in _NAMES:
        return _NAMES[annotation]
    if annotation is None:
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if _is_time_class(annotation):
        return TIME_HINT
    if origin in (dict, Mapping):
        return "mapping"
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} ({', '.join(describe(a) for a in args)})"
    if origin in (list, Sequence, tuple, Collection):
        return f"list of {describe(args[0])}" if args else "list"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(_enum_names(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _yaml_writable(annotation: Any) -> bool:
    """Whether a YAML can produce a value of ``annotation`` (not a Tensor or a client object)."""
    origin = typing.get_origin(annotation)
    if origin is not None or annotation in _NAMES or _is_time_class(annotation):
        return True
    return not isinstance(annotation, type) or issubclass(annotation, enum.Enum)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_value(value: Any, annotation: Any, path: str) -> None:
    """Fail unless ``value`` fits ``annotation``.

    Raises:
        ConfigError: ``<path> must be <what is allowed>, got <type> <value>``.
    """
    if not _matches(value, annotation):
        raise ConfigError(
            f"{path} must be {describe(annotation)}, got {type(value).__name__} {_shown(value)}"
        )


def unknown_key_error(
    path: str, key: str, allowed: Collection[str], owner: str | None = None
) -> ConfigError:
    """The one-line error for a key a section does not take (``owner``: whose keys they are)."""
    return ConfigError(
        f"{path}.{key} is not a valid key{f' for {owner}' if owner else ''}"
        f"{did_you_mean(key, allowed)} (valid: {', '.join(sorted(allowed))})"
    )


def check_fields(
    section: Mapping[str, Any],
    hints: Mapping[str, Any],
    path: str,
    *,
    open_keys: bool = False,
    owner: str | None = None,
) -> None:
    """Check each key of ``section`` against ``hints`` (key -> annotation).

    Args:
        section: the config section.
        hints: the annotation of every key the section may have.
        path: the section's key path (``model.attn_config``), for messages.
        open_keys: accept keys that ``hints`` does not list (only their types go unchecked).
        owner: what takes these keys, for the unknown-key message (``mpt_causal_lm``).

    Raises:
        ConfigError: naming an unknown key (with the closest valid one) or a value of the wrong type.
    """
    for key, value in section.items():
        if key in hints:
            check_value(value, hints[key], f"{path}.{key}")
        elif not open_keys:
            raise unknown_key_error(path, str(key), hints, owner)


def _signature_of(func: Any) -> tuple[inspect.Signature | None, dict[str, Any]]:
    """``func``'s signature (its ``__init__``'s for a class) and its resolved annotations."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None, {}
    target = func.__init__ if inspect.isclass(func) else func
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # annotations that do not resolve (a name only imported for typing)
        hints = {}
    return signature, hints


def check_call_kwargs(
    func: Any, kwargs: Mapping[str, Any], path: str, reserved: Collection[str] = ()
) -> None:
    """Check a section's keys and values against the signature of what they are passed to.

    Args:
        func: the constructor or function the section's keys become keyword arguments of.
        kwargs: the section's keys (without ``name``).
        path: the section's key path, for messages (``optimizer``, ``callbacks.speed_monitor``).
        reserved: parameters the builder fills (``params``, ``tokenizer``); the config may not.

    Raises:
        ConfigError: naming an unknown key (with the valid ones), a value whose type does not
            fit the parameter's annotation, or a required parameter the section lacks.
    """
    signature, hints = _signature_of(func)
    if signature is None:
        return
    params = {
        name: p
        for name, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in reserved
    }
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    for key, value in kwargs.items():
        if key in params:
            if key in hints:
                check_value(value, hints[key], f"{path}.{key}")
        elif not takes_any:
            raise unknown_key_error(path, str(key), params)
    for name, param in params.items():
        if param.default is param.empty and name not in kwargs:
            raise ConfigError(f"{path}.{name} is missing; it is required (add {name}: <value>)")


def lookup(registry: Registry[Any], path: str, name: Any) -> Any:
    """``registry``'s entry ``name``, failing with the key path that named it.

    Raises:
        ConfigError: ``<path>: '<name>' is not a registered entry ...`` with the known names.
    """
    if not isinstance(name, str):
        raise ConfigError(
            f"{path} must be str (a name in the '{registry.name}' registry), got "
            f"{type(name).__name__} {_shown(name)}"
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
            f"{_shown(section)}"
        )
    if "name" not in section:
        raise ConfigError(
            f"{path}.name is missing; it names an entry of the '{registry.name}' registry"
        )
    entry = lookup(registry, f"{path}.name", section["name"])
    kwargs = {str(k): v for k, v in section.items() if k != "name"}
    check_call_kwargs(entry, kwargs, path, reserved)
    return entry


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
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ConfigError(f"{where} must be a mapping of keyword arguments (or empty)")
        found = [(reg, res) for reg, res in registries if name in reg]
        if not found:
            raise ConfigError(
                f"{where}: '{name}' is not a registered entry of the "
                f"'{registries[0][0].name}' registry{did_you_mean(str(name), known)} "
                f"(known: {', '.join(sorted(known))})"
            )
        registry, fills_first = found[0]
        entry = registry.get(name)
        signature, _ = _signature_of(entry)
        first = next(iter(signature.parameters), None) if signature is not None else None
        reserved = {first} if fills_first and first is not None else set()
        check_call_kwargs(entry, dict(kwargs or {}), where, reserved)


def interpolation_error(err: Exception) -> ConfigError:
    """The one-line error for a ``${...}`` that does not resolve, naming the key that holds it.

    Args:
        err: OmegaConf's error (its ``full_key`` is the key whose value failed).
    """
    key = str(getattr(err, "full_key", "") or "the config")
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "Recursive interpolation" in first:
        return ConfigError(
            f"{key}: its ${{...}} interpolations refer back to {key} (a cycle); give one of "
            "the variables in the cycle a plain value"
        )
    if "not found" in first:
        return ConfigError(
            f"{key}: could not resolve it ({first}); define that key (variables go under "
            "`variables:`, referred to as ${variables.name}) or fix the reference"
        )
    return ConfigError(
        f"{key}: could not resolve it ({first}); write interpolations as ${{variables.name}}"
    )


def override_error(item: str, err: Exception) -> ConfigError:
    """The one-line error for a ``key=value`` override that cannot be applied.

    Args:
        item: the override as given.
        err: why OmegaConf refused it.
    """
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    if isinstance(err, IndexError) or "is not an int" in first or "list index" in first:
        key = item.split("=", 1)[0]
        return ConfigError(
            f"could not apply override '{item}': {first}; '{key}' does not name an existing "
            "entry: use the position of one, counting from 0 (e.g. models.0.model.d_model=64)"
        )
    if "${" in item:
        return ConfigError(
            f"could not apply override '{item}': {first}; write an interpolation as "
            "${variables.name} (closed by a brace)"
        )
    return ConfigError(
        f"could not apply override '{item}': {first}; write key=value with a dotted key "
        "(e.g. model.n_layers=2)"
    )


def yaml_error(path: str | Path, err: Exception) -> ConfigError:
    """The one-line error for a run config file that cannot be read as a YAML mapping.

    Args:
        path: the file.
        err: what reading it raised (a YAML syntax error, OmegaConf's refusal of a top level
            that is not a mapping, an undecodable byte).
    """
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        return ConfigError(
            f"could not parse '{path}': {err.problem} at line {err.problem_mark.line + 1}, "
            f"column {err.problem_mark.column + 1}; fix the YAML syntax there"
        )
    if isinstance(err, UnicodeDecodeError):
        return ConfigError(
            f"could not read '{path}': byte {err.start} is not UTF-8; save the file as UTF-8"
        )
    if "Invalid loaded object type" in str(err):
        return ConfigError(f"'{path}' must hold a mapping of keys at the top level")
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return ConfigError(f"could not read '{path}': {first}; give a readable YAML run config")
