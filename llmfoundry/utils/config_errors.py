"""One-line errors for a run config that cannot be read: a YAML that does not parse, a
``key=value`` override that cannot be applied, an interpolation that does not resolve."""

from __future__ import annotations

from pathlib import Path

import yaml

from llmfoundry.utils.exceptions import ConfigError

__all__ = ["interpolation_error", "override_error", "yaml_error"]


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
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        value = item.split("=", 1)[1]
        return ConfigError(
            f"could not parse the value of override '{item}': {err.problem}; write {value!r} "
            "as one YAML value (quote it, or fix the brackets and keys of a list or mapping)"
        )
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
