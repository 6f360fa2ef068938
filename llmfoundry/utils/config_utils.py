"""Load a run config: YAML + dotlist overrides -> resolved variables -> a validated dataclass.

Rules (shared by train and eval):
- ``${variables.x}`` interpolations resolve against the ``variables:`` section.
- Older YAMLs keep variables at the top level (``data_local: ...`` used as ``${data_local}``,
  or a ``dataset: &hf_dataset`` section merged into the loaders with ``<<: *hf_dataset``).
  Such a key is accepted and moved under ``variables``, with a warning, when an interpolation
  or a YAML alias refers to it. (LLM Foundry 0.22's own loader rejects these keys.)
- ``${x}`` where ``x`` lives under ``variables:`` (not at the top level) is read as
  ``${variables.x}``, with a warning.
- Any other unknown top-level key fails with the closest valid key; a value of the wrong type
  fails naming the key and the expected type (the checker is :mod:`config_checks`; a
  ``TIME`` field must be a Composer time string, a ``POSITIVE`` one above zero). The sections
  inside (``model``, ``optimizer``, ...) are checked against their registry entries before a
  run builds anything (``command_utils.preflight``).
- An override's value is applied unresolved: ``model.d_model=${variables.d}`` refers to the
  run config.
- A train or eval config then goes through every registered ``config_transforms`` entry, in
  registration order (after its ``code_paths`` are imported, so those may register some),
  before it is validated: see :func:`apply_registered_transforms`. A transform that fails
  with anything but a user error is named in the one-line error.

Where a new config key goes: a top-level key is a field of ``TrainConfig`` / ``EvalConfig``
(typed; ``Annotated[..., TIME | POSITIVE | NON_NEGATIVE]`` for ranges); a key inside a section
is a parameter of the constructor the section is passed to (its signature is the schema:
``check_call_kwargs``), or a field of the dataclass/TypedDict that describes the section
(``config_checks.Schema``). Everything goes through ``config_checks``' one recursive checker.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from llmfoundry import registry
from llmfoundry.utils.config_checks import check_value, declared_hints
from llmfoundry.utils.config_errors import interpolation_error, override_error, yaml_error
from llmfoundry.utils.config_helpers import log_config, pop_config, process_init_device
from llmfoundry.utils.config_transforms import (
    ConfigTransform,
    apply_transforms_to_config,
    calculate_batch_size_info,
    update_batch_size_info,
)
from llmfoundry.utils.exceptions import (
    ConfigError,
    MissingFileError,
    UserError,
    did_you_mean,
    first_line,
)
from llmfoundry.utils.run_configs import EvalConfig, TrainConfig
from llmfoundry.utils.user_code import import_code_paths

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "EvalConfig",
    "TrainConfig",
    "apply_registered_transforms",
    "apply_transforms_to_config",
    "calculate_batch_size_info",
    "load_config",
    "log_config",
    "pop_config",
    "process_init_device",
    "update_batch_size_info",
]

logger = logging.getLogger(__name__)

ConfigT = TypeVar("ConfigT", bound="DataclassInstance")

# The first name of an interpolation: ``${data_local}`` and ``${variables.x}`` give data_local, variables.
_INTERPOLATION = re.compile(r"\$\{\s*([A-Za-z_][\w]*)")


def load_yaml_with_overrides(
    yaml_path: str | Path, overrides: Sequence[str] = (), valid_keys: Collection[str] = ()
) -> DictConfig:
    """Read a YAML file and merge ``key=value`` dotlist overrides into it (unresolved).

    An override whose first part is not one of ``valid_keys`` but names an entry of the YAML's
    ``variables`` sets that variable (``model_name_or_path=x`` sets
    ``variables.model_name_or_path``).

    Raises:
        MissingFileError: if the YAML does not exist.
        ConfigError: if the YAML or an override cannot be parsed.
    """
    path = Path(yaml_path)
    if not path.is_file():
        raise MissingFileError(
            f"config file '{yaml_path}' does not exist; pass the path of a YAML run config"
        )
    try:
        base = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError, OSError, UnicodeDecodeError) as err:
        raise yaml_error(yaml_path, err) from err
    if not isinstance(base, DictConfig):
        raise ConfigError(f"'{yaml_path}' must hold a mapping of keys at the top level")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override '{item}' must look like key=value (e.g. max_duration=10ba)"
            )
    variables = base.get("variables")
    if valid_keys and isinstance(variables, DictConfig):
        overrides = [
            f"variables.{item}"
            if (root := item.split("=", 1)[0].split(".", 1)[0]) not in valid_keys
            and root not in base
            and root in variables
            else item
            for item in overrides
        ]
    for item in overrides:
        key, value = item.split("=", 1)
        try:
            # One item at a time, so that a key may index a list (models.0.load_path=...).
            parsed = OmegaConf.from_dotlist([f"value={value}"])
            # Unresolved: an interpolation in the value refers to the run config, resolved later.
            unresolved = OmegaConf.to_container(parsed, resolve=False)
            assert isinstance(unresolved, dict)
            OmegaConf.update(base, key, unresolved["value"], merge=True)
        except (OmegaConfBaseException, yaml.YAMLError, TypeError, ValueError, IndexError) as err:
            raise override_error(item, err) from err
    return base


def _referenced_top_level_keys(node: Any) -> set[str]:
    """Names of top-level keys that some interpolation (``${name...}``) in the config refers to.

    Args:
        node: the unresolved config as plain containers (``to_container(resolve=False)``).
    """
    if isinstance(node, dict):
        return set().union(*(_referenced_top_level_keys(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_referenced_top_level_keys(v) for v in node))
    if isinstance(node, str):
        return set(_INTERPOLATION.findall(node))
    return set()


def anchored_top_level_keys(text: str) -> set[str]:
    """Top-level keys of a YAML document whose value has an anchor (``dataset: &hf_dataset``)
    that an alias (``<<: *hf_dataset``) somewhere in the document refers to."""
    anchors: dict[str, str] = {}
    aliased: set[str] = set()
    depth, at_key, key = 0, True, None
    for event in yaml.parse(text):
        if isinstance(event, yaml.AliasEvent):
            aliased.add(str(event.anchor))
        closes = isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent)
        if depth == 1 and not closes:
            if at_key:
                key = event.value if isinstance(event, yaml.ScalarEvent) else None
            elif key is not None and not isinstance(event, yaml.AliasEvent):
                anchor = getattr(event, "anchor", None)
                if anchor is not None:
                    anchors[str(anchor)] = str(key)
            at_key = not at_key
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
        elif closes:
            depth -= 1
    return {key for anchor, key in anchors.items() if anchor in aliased}


def _rewrite_strings(node: Any, rewrite: Any) -> Any:
    """``node`` (plain containers) with ``rewrite`` applied to every string in it."""
    if isinstance(node, dict):
        return {k: _rewrite_strings(v, rewrite) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_strings(v, rewrite) for v in node]
    return rewrite(node) if isinstance(node, str) else node


def _namespace_variable_references(container: dict[str, Any]) -> dict[str, Any]:
    """Read ``${x}`` as ``${variables.x}`` where ``x`` is a variable but not a top-level key."""
    variables = container.get("variables")
    if not isinstance(variables, dict):
        return container
    misplaced = sorted(
        name
        for name in _referenced_top_level_keys(container)
        if name not in container and name in variables
    )
    if not misplaced:
        return container
    for name in misplaced:
        logger.warning(
            "${%s} refers to variables.%s; write ${variables.%s} (LLM Foundry 0.22 does not "
            "resolve ${%s} when %s is under `variables:`)",
            name,
            name,
            name,
            name,
            name,
        )
    pattern = re.compile(r"(?<!\\)\$\{(\s*)(" + "|".join(map(re.escape, misplaced)) + r")\b")
    rewritten = _rewrite_strings(container, lambda text: pattern.sub(r"${\1variables.\2", text))
    assert isinstance(rewritten, dict)
    return rewritten


def resolve_config(
    cfg: DictConfig,
    valid_keys: set[str],
    anchored: Collection[str] = (),
    referenced_in_file: Collection[str] = (),
) -> dict[str, Any]:
    """Resolve interpolations and move legacy top-level variables under ``variables``.

    Args:
        cfg: the merged, unresolved config.
        valid_keys: the top-level keys of the target dataclass.
        anchored: top-level keys whose YAML anchors are referred to by aliases (see
            :func:`anchored_top_level_keys`); these, like keys an interpolation refers to,
            are read as variables.
        referenced_in_file: top-level keys the YAML file's own interpolations refer to (an
            override may have replaced the only reference, e.g. ``tokenizer.name=...`` for
            ``${tokenizer_name}``); read as variables too.

    Returns:
        A plain, fully resolved dict; a top-level key that is neither valid nor a legacy
        variable is kept (``to_dataclass`` rejects it, after any config transforms).

    Raises:
        ConfigError: on a failed interpolation.
    """
    container = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(container, dict)
    container = _namespace_variable_references({str(k): v for k, v in container.items()})
    referenced = _referenced_top_level_keys(container) | set(referenced_in_file)
    legacy: dict[str, str] = {}
    for key in container:
        if key in valid_keys:
            continue
        if key in referenced:
            legacy[key] = f"refer to it as ${{variables.{key}}}"
        elif key in anchored:
            legacy[key] = "keep its anchor there (YAML aliases use it)"
        # Any other unknown key is left for the config transforms, then for validation.
    try:
        resolved = OmegaConf.to_container(OmegaConf.create(container), resolve=True)
    except OmegaConfBaseException as err:
        raise interpolation_error(err) from err
    assert isinstance(resolved, dict)
    if legacy:
        variables = resolved.setdefault("variables", {}) or {}
        for key, modern in legacy.items():
            logger.warning(
                "top-level key '%s' is read as a variable; move it under `variables:` and %s "
                "(top-level variables are deprecated; LLM Foundry 0.22 rejects them)",
                key,
                modern,
            )
            variables[key] = resolved.pop(key)
        resolved["variables"] = variables
    return {str(k): v for k, v in resolved.items()}


def to_dataclass(resolved: Mapping[str, Any], cls: type[ConfigT]) -> ConfigT:
    """Build ``cls`` from a resolved config, checking required keys and value types.

    Raises:
        ConfigError: naming a missing required key, or a key whose value has the wrong type.
    """
    hints = declared_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name, field in fields.items():
        required = (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        if required and name not in resolved:
            raise ConfigError(f"required key '{name}' is missing from the config")
    for key, value in resolved.items():
        if key not in fields:
            hint = did_you_mean(key, fields) or (
                "; remove it (values that ${variables.x} refers to go under `variables:`)"
            )
            raise ConfigError(f"unknown top-level key '{key}'{hint}")
        check_value(value, hints[key], key)
    return cls(**resolved)


def _named(name: str, transform: ConfigTransform) -> ConfigTransform:
    """``transform``, failing in one line that names it (its registered ``name`` and module)
    when it raises anything but a user error (a ``ConfigError`` of its own is kept)."""

    def run(cfg: dict[str, Any]) -> dict[str, Any]:
        try:
            return transform(cfg)
        except UserError:
            raise
        except Exception as err:
            raise ConfigError(
                f"config transform '{name}' (from {getattr(transform, '__module__', '?')}) "
                f"failed: {type(err).__name__}: {first_line(err)}; fix the transform, or the "
                "config keys it reads"
            ) from err

    run.__name__ = name
    return run


def apply_registered_transforms(cfg: dict[str, Any]) -> dict[str, Any]:
    """Apply every registered ``config_transforms`` entry to ``cfg``, in registration order.

    Raises:
        ConfigError: naming a transform that fails or does not return the config dict.
    """
    transforms = registry.config_transforms.get_all()
    return apply_transforms_to_config(cfg, [_named(n, f) for n, f in transforms.items()])


def _field_names(cls: type[DataclassInstance]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def config_from_mapping(
    cfg: Mapping[str, Any],
    cls: type[ConfigT],
    anchored: Collection[str] = (),
    referenced: Collection[str] | None = None,
) -> tuple[ConfigT, dict[str, Any]]:
    """:func:`load_config` for an unresolved mapping (``DictConfig`` or dict) instead of a file."""
    merged = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    if referenced is None:
        referenced = _referenced_top_level_keys(OmegaConf.to_container(merged, resolve=False))
    resolved = resolve_config(merged, _field_names(cls), anchored, referenced)
    code_paths = resolved.get("code_paths")
    if isinstance(code_paths, list):
        import_code_paths([str(path) for path in code_paths])
    resolved = apply_registered_transforms(resolved)
    return to_dataclass(resolved, cls), resolved


@overload
def load_config(
    yaml_path: str | Path, overrides: Sequence[str] = ()
) -> tuple[TrainConfig, dict[str, Any]]: ...


@overload
def load_config(
    yaml_path: str | Path, overrides: Sequence[str], cls: type[ConfigT]
) -> tuple[ConfigT, dict[str, Any]]: ...


@overload
def load_config(
    yaml_path: str | Path, overrides: Sequence[str] = (), *, cls: type[ConfigT]
) -> tuple[ConfigT, dict[str, Any]]: ...


def load_config(
    yaml_path: str | Path,
    overrides: Sequence[str] = (),
    cls: type[DataclassInstance] = TrainConfig,
) -> tuple[DataclassInstance, dict[str, Any]]:
    """Load, resolve and validate a run config.

    Args:
        yaml_path: the YAML file.
        overrides: ``key=value`` dotlist overrides (``train_loader.num_workers=0``).
        cls: the dataclass that validates the top level (:class:`TrainConfig` by default).

    The config (train or eval) is, as in LLM Foundry, then passed through every registered
    config transform (``update_batch_size_info`` among them), after its ``code_paths`` files
    are imported, and only then validated.

    Returns:
        The validated dataclass and the resolved (and transformed) config as a plain dict, for
        logging.

    Raises:
        MissingFileError, ConfigError: see the helpers above.
    """
    merged = load_yaml_with_overrides(yaml_path, overrides, _field_names(cls))
    text = Path(yaml_path).read_text(encoding="utf-8")
    in_file = _referenced_top_level_keys(OmegaConf.to_container(OmegaConf.create(text)))
    config, resolved = config_from_mapping(merged, cls, anchored_top_level_keys(text), in_file)
    if isinstance(config, TrainConfig | EvalConfig):
        config.config_dir = str(Path(yaml_path).resolve().parent)
    return config, resolved
