"""One checker for config values: a value against a type annotation (recursively, into the
sections and lists it types), each failure reported in one line with the full key path
(``model.attn_config.qk_ln``) and what the key allows. :mod:`config_components` checks a
section against the signature it is passed to with it.

The annotations come from what already describes a section: the run config dataclasses
(``TrainConfig``), a constructor's signature (an optimizer, a callback, a dataset) or a table
of typed defaults (MPT's ``attn_config``). ``Annotated[..., TIME]`` marks a Composer time
(``10ba``, ``2ep``); ``Annotated[..., POSITIVE]`` marks a number that must be above zero,
``NON_NEGATIVE`` one that must not be below it, ``FRACTION`` one in ``(0, 1]`` and
``PROBABILITY`` one in ``[0, 1]`` (a ``Marker`` states any other interval). A dataclass or TypedDict
annotation (or ``Annotated[dict[str, Any], Schema(...)]``) is a section: its keys are checked
in turn, and a problem inside is reported with its own key path (``icl_tasks[0].label``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Annotated, Any, Literal, Union

from llmfoundry.utils.exceptions import ConfigError, did_you_mean

__all__ = [
    "FRACTION",
    "NON_NEGATIVE",
    "POSITIVE",
    "PROBABILITY",
    "TIME",
    "Schema",
    "check_fields",
    "check_value",
    "describe",
    "is_schema",
    "is_time_string",
    "mismatch",
]


@dataclasses.dataclass(frozen=True)
class Marker:
    """A constraint carried by ``Annotated`` beyond the type: ``TIME``, or bounds on a number
    (``POSITIVE``, ``NON_NEGATIVE``, ``FRACTION``, ``PROBABILITY``)."""

    name: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, number: float) -> bool:
        """Whether ``number`` lies within the bounds (NaN never does; any number does for a
        marker without bounds)."""
        above = self.low is None or (number > self.low if self.low_open else number >= self.low)
        below = self.high is None or (number < self.high if self.high_open else number <= self.high)
        return above and below

    def words(self, base: str) -> str:
        """``base`` (``float``) qualified by the bounds: ``a positive float``, ``a float in
        (0, 1]``."""
        if self.high is None:
            return f"a {self.name} {base}"
        low, high = "(" if self.low_open else "[", ")" if self.high_open else "]"
        article = "an" if base[:1] in ("a", "e", "i", "o", "u") else "a"
        return f"{article} {base} in {low}{_number(self.low)}, {_number(self.high)}{high}"


def _number(bound: float | None) -> str:
    """A bound as a config would write it: ``0``, ``4294967295``, ``0.5``."""
    return str(int(bound)) if bound is not None and float(bound).is_integer() else str(bound)


TIME = Marker("time")
POSITIVE = Marker("positive", low=0, low_open=True)
NON_NEGATIVE = Marker("non-negative", low=0)
FRACTION = Marker("fraction", low=0, high=1, low_open=True)
PROBABILITY = Marker("probability", low=0, high=1)
PositiveInt = Annotated[int, POSITIVE]
"""A whole number >= 1 (not a bool): ``check_value(n, PositiveInt, key)``."""
NonNegativeInt = Annotated[int, NON_NEGATIVE]
"""A whole number >= 0 (not a bool)."""
PositiveFloat = Annotated[float, POSITIVE]
"""A number > 0 (an int is accepted, a bool is not)."""
NonNegativeFloat = Annotated[float, NON_NEGATIVE]
"""A number >= 0 (an int is accepted, a bool is not)."""
Fraction = Annotated[float, FRACTION]
"""A number in ``(0, 1]``: a share or a multiplier that may shrink a value but not zero it."""
Probability = Annotated[float, PROBABILITY]
"""A number in ``[0, 1]``."""
Seed = Annotated[int, Marker("seed", low=0, high=2**32 - 1)]
"""A random seed: numpy takes ``[0, 2**32 - 1]``."""
AllOrCount = Literal[-1] | PositiveInt
"""How many of something to take: -1 for all of them, else a positive count."""

TIME_HINT = "a time string (a number >= 0 and a unit: 10ba, 2ep, 1000tok, 500sp or 0.5dur)"


def is_time_string(text: str) -> bool:
    """Whether Composer reads ``text`` as a time (``10ba``, ``2ep``, ``0.5dur``, ``1h30m``)
    that is not negative.

    A string without a unit is refused, although Composer reads ``"3"`` as 30 seconds.
    """
    from composer.core.time import Time

    if not any(char.isalpha() for char in text):
        return False
    try:
        return Time.from_timestring(text).value >= 0  # no Composer duration is negative
    except (TypeError, ValueError):  # TypeError: a fraction of a whole unit ('1.5ba')
        return False


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


# What ``_problem`` finds: None (the value fits), HERE (it does not fit the annotation at this
# key path: the caller says what the annotation allows) or a whole message about a key inside.
HERE = ""


def _items_problem(items: Collection[tuple[str, Any, Any]], path: str) -> str | None:
    """The first problem among ``(key_suffix, value, annotation)`` items of a container.

    An item that does not fit makes the container not fit (HERE: ``list of str`` is what the
    message says is allowed); a message about a key inside an item (a section's) is kept.
    """
    for suffix, value, annotation in items:
        found = _problem(value, annotation, f"{path}{suffix}")
        if found is not None:
            return found
    return None


def _container_problem(value: Any, origin: Any, args: tuple[Any, ...], path: str) -> str | None:
    """``_problem`` for ``dict[...]``, ``list[...]`` and ``tuple[...]`` annotations."""
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            return HERE
        if not args:
            return None
        return _items_problem([(f".{k}", v, args[-1]) for k, v in value.items()], path)
    if not isinstance(value, list | tuple):
        return HERE
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            return HERE
        return _items_problem(
            [(f"[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True))], path
        )
    if not args:
        return None
    return _items_problem([(f"[{i}]", v, args[0]) for i, v in enumerate(value)], path)


def _union_problem(value: Any, args: tuple[Any, ...], path: str) -> str | None:
    """``_problem`` for ``A | B``: None if one fits, else the problem inside the member whose
    shape fits (a list with a bad entry), else HERE."""
    if any(_is_time_class(arg) for arg in args) and isinstance(value, str):
        return None if is_time_string(value) else HERE
    inner = HERE
    for arg in args:
        found = _problem(value, arg, path)
        if found is None:
            return None
        inner = inner or found
    return inner


def _holds(value: Any, marker: Marker) -> bool:
    """Whether ``value`` satisfies a ``TIME`` marker or a number's bounds."""
    if marker is TIME and isinstance(value, str):
        return is_time_string(value)
    bounds = NON_NEGATIVE if marker is TIME else marker  # a time in a unit-less number: >= 0
    return not isinstance(value, int | float) or bounds.holds(value)


def _scalar_fits(value: Any, annotation: Any) -> bool:
    """Whether a YAML scalar fits a plain class annotation (``int``, an enum, ...)."""
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return isinstance(value, annotation) or str(value) in _enum_names(annotation)
    return not isinstance(annotation, type) or isinstance(value, annotation)


def _problem(value: Any, annotation: Any, path: str) -> str | None:
    """What is wrong with ``value`` (as a YAML gives it) at ``path`` for ``annotation``.

    Returns:
        None if it fits, ``HERE`` if it does not fit this annotation, or the one-line message
        for a key inside it (a section's unknown key, ``icl_tasks[0].num_fewshot``).
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or isinstance(annotation, str | typing.TypeVar | typing.ForwardRef):
        return None
    if origin is Annotated:
        found = _problem(value, args[0], path)
        if found is not None:
            return found
        if not all(_holds(value, marker) for marker in args[1:] if isinstance(marker, Marker)):
            return HERE
        schemas = [marker for marker in args[1:] if isinstance(marker, Schema)]
        return next((p for s in schemas if (p := s.problem(value, path)) is not None), None)
    if is_schema(annotation):
        return Schema(annotation).problem(value, path)
    if _is_union(annotation):
        return _union_problem(value, args, path)
    if annotation is None or annotation is type(None):
        return None if value is None else HERE
    if origin is Literal:
        return None if value in args else HERE
    if _is_time_class(annotation):
        return None if isinstance(value, str) and is_time_string(value) else HERE
    if origin in (dict, Mapping, list, Sequence, tuple, Collection):
        return _container_problem(value, origin, args, path)
    if origin is Callable or annotation is Callable:
        return None  # not something a YAML writes; the constructor decides
    return None if _scalar_fits(value, annotation) else HERE


def is_schema(annotation: Any) -> bool:
    """Whether ``annotation`` describes a section by its keys: a dataclass or a TypedDict."""
    return isinstance(annotation, type) and (
        dataclasses.is_dataclass(annotation) or typing.is_typeddict(annotation)
    )


@functools.cache
def declared_hints(target: Any) -> dict[str, Any]:
    """``target``'s resolved annotations (a schema class's keys, a function's parameters), read
    once per target: schemas ask on every section and list item they check, constructors on
    every call. A name that does not resolve (one imported only for typing, as in Composer's
    ``Profiler``) is left out, so its value goes unchecked. Callers do not mutate the result."""
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:
        pass
    module = sys.modules.get(getattr(target, "__module__", None) or "")
    namespace = getattr(inspect.unwrap(target), "__globals__", None) or vars(module or types)
    hints: dict[str, Any] = {}
    for name, annotation in dict(getattr(target, "__annotations__", {})).items():

        def stub() -> None: ...

        stub.__annotations__ = {name: annotation}
        try:
            hints[name] = typing.get_type_hints(stub, globalns=namespace, include_extras=True)[name]
        except Exception:
            continue
    return hints


def parameter_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations of ``func``'s parameters (of its ``__init__`` for a class)."""
    return declared_hints(func.__init__ if inspect.isclass(func) else func)


def check_arguments(owner: Callable[..., Any], prefix: str, **values: Any) -> None:
    """Check each argument in ``values`` against the annotation its parameter has on ``owner``,
    so that a constructor states each range once, on its signature (which the run's config
    check reads too): ``check_arguments(RunTimeout, "callbacks.run_timeout.", timeout=t)``.

    Args:
        owner: the function, or the class whose ``__init__`` declares the parameters.
        prefix: put before each name in messages (``callbacks.run_timeout.``, ``--``).
        values: the arguments, by parameter name.

    Raises:
        ConfigError: ``<prefix><name> must be <what is allowed>, got <type> <value>``.
    """
    hints = parameter_hints(owner)
    for name, value in values.items():
        check_value(value, hints[name], f"{prefix}{name}")


def check_fields_of(instance: Any, prefix: str, names: Collection[str] | None = None) -> None:
    """:func:`check_arguments` for a dataclass instance's fields (``names``, default all): a
    settings dataclass checks itself in ``__post_init__``. Raises ConfigError as it does."""
    if names is None:
        names = [field.name for field in dataclasses.fields(instance)]
    check_arguments(type(instance), prefix, **{name: getattr(instance, name) for name in names})


def _without_requiredness(annotation: Any) -> Any:
    """``X`` for a TypedDict key's ``Required[X]`` or ``NotRequired[X]``."""
    while typing.get_origin(annotation) in (typing.Required, typing.NotRequired):
        annotation = typing.get_args(annotation)[0]
    return annotation


@dataclasses.dataclass(frozen=True)
class Schema:
    """A section's keys and their annotations, from a dataclass or a TypedDict (``of``).

    ``Annotated[dict[str, Any], Schema(TaskKeys)]`` types a field as a plain mapping that must
    have ``TaskKeys``'s keys; a dataclass or TypedDict annotation is read the same way.

    Args:
        of: the dataclass or TypedDict.
        open_keys: accept keys that ``of`` does not declare (their values go unchecked).
        extra: more keys and their annotations (aliases the section also accepts).
    """

    of: Any
    open_keys: bool = False
    extra: tuple[tuple[str, Any], ...] = ()

    def hints(self) -> dict[str, Any]:
        """Every key the section may have, with its annotation (``Required[X]`` read as ``X``)."""
        hints = {k: _without_requiredness(v) for k, v in self._declared().items()}
        if dataclasses.is_dataclass(self.of):
            init = {f.name for f in dataclasses.fields(self.of) if f.init}
            hints = {k: v for k, v in hints.items() if k in init}
        return {**hints, **dict(self.extra)}

    def required(self) -> list[str]:
        """The keys the section must have. A TypedDict's ``Required[...]``/``NotRequired[...]``
        count even in a module with postponed annotations, where the class itself cannot see
        them."""
        if dataclasses.is_dataclass(self.of):
            return [
                f.name
                for f in dataclasses.fields(self.of)
                if f.init
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            ]
        marked = {k: typing.get_origin(v) for k, v in self._declared().items()}
        required = set(getattr(self.of, "__required_keys__", ()))
        required |= {k for k, origin in marked.items() if origin is typing.Required}
        return sorted(
            required - {k for k, origin in marked.items() if origin is typing.NotRequired}
        )

    def _declared(self) -> dict[str, Any]:
        return declared_hints(self.of)

    def problem(self, value: Any, path: str) -> str | None:
        """``_problem`` for a section described by this schema."""
        if not isinstance(value, Mapping):
            return HERE
        try:
            check_fields(value, self.hints(), path, open_keys=self.open_keys)
        except ConfigError as err:
            return str(err)
        missing = [key for key in self.required() if key not in value]
        if missing:
            return f"{path}.{missing[0]} is missing; it is required (add {missing[0]}: <value>)"
        return None


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
            named = {"int": NON_NEGATIVE.words("int"), "str": TIME_HINT}
            return " or ".join(named.get(word, word) for word in base.split(" or "))
        bounds = [marker for marker in args[1:] if isinstance(marker, Marker)]
        return bounds[0].words(base) if bounds else base
    if _is_union(annotation):
        if any(_is_time_class(arg) for arg in args):
            plain = [describe(a) for a in args if not _is_time_class(a) and a is not str]
            return " or ".join(dict.fromkeys([*plain, TIME_HINT]))
        yaml_args = [a for a in args if _yaml_writable(a)] or list(args)
        return " or ".join(dict.fromkeys(describe(a) for a in yaml_args))
    if annotation in _NAMES:
        return _NAMES[annotation]
    if is_schema(annotation):
        return "mapping"
    if annotation is None:
        return "null"
    if origin is Literal:
        return repr(args[0]) if len(args) == 1 else "one of " + ", ".join(repr(a) for a in args)
    if _is_time_class(annotation):
        return TIME_HINT
    if origin in (dict, Mapping):
        return "mapping"
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} ({', '.join(describe(a) for a in args)})"
    if origin in (list, Sequence, tuple, Collection):
        return f"list of {describe(args[0]).removeprefix('a ')}" if args else "list"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(_enum_names(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _yaml_writable(annotation: Any) -> bool:
    """Whether a YAML can produce a value of ``annotation`` (not a Tensor or a client object)."""
    origin = typing.get_origin(annotation)
    if origin is not None or annotation in _NAMES or _is_time_class(annotation):
        return True
    return not isinstance(annotation, type) or issubclass(annotation, enum.Enum)


def shown(value: Any) -> str:
    """``repr(value)``, cut to 80 characters, for messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def mismatch(value: Any, annotation: Any, path: str) -> str:
    """``<path> must be <what is allowed>, got <type> <value>`` (and the closest allowed word,
    for a misspelled one of a ``Literal`` of words)."""
    message = f"{path} must be {describe(annotation)}, got {type(value).__name__} {shown(value)}"
    words = typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()
    if isinstance(value, str) and words and all(isinstance(word, str) for word in words):
        message += did_you_mean(value, words)
    return message


def check_value(value: Any, annotation: Any, path: str) -> None:
    """Fail unless ``value`` fits ``annotation`` (recursively: a section's keys, a list's items).

    Raises:
        ConfigError: ``<path> must be <what is allowed>, got <type> <value>``, or the message
            for a key inside (``icl_tasks[0].num_fewshot must be ...``, an unknown key).
    """
    found = _problem(value, annotation, path)
    if found is not None:
        raise ConfigError(found or mismatch(value, annotation, path))


def unknown_key_message(
    path: str, key: str, allowed: Collection[str], owner: str | None = None
) -> str:
    """The one line for a key a section does not take (``owner``: whose keys they are)."""
    valid = f"valid: {', '.join(sorted(allowed))}" if allowed else "it takes no keys; use {}"
    whose = f" for {owner}" if owner else ""
    return f"{path}.{key} is not a valid key{whose}{did_you_mean(key, allowed)} ({valid})"


def unknown_key_error(
    path: str, key: str, allowed: Collection[str], owner: str | None = None
) -> ConfigError:
    """:func:`unknown_key_message` as the error to raise."""
    return ConfigError(unknown_key_message(path, key, allowed, owner))


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
