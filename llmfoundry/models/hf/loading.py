"""Which classes read a Hugging Face folder, and loading a causal LM from one for training.

Importing ``llmfoundry.models.hf`` (every command does; ``import llmfoundry`` stays light and
does not) registers our MPT classes with transformers' Auto classes
(:func:`register_auto_classes`) for ``model_type`` ``mpt`` and ``llmfoundry_mpt``. An MPT folder
(our export, an LLM Foundry 0.22 export, or the Hub layout of ``mosaicml/mpt-7b``) then loads
through ``AutoConfig`` / ``AutoModelForCausalLM`` as our ``MPTConfig`` / ``MPTForCausalLM``,
with or without ``trust_remote_code``: no code from the folder runs, and transformers' native
``MptForCausalLM`` (ALiBi only, no learned positions, no biases) never silently replaces it.
Any other folder that ships its own model code still needs ``trust_remote_code``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM, MPTModel
from llmfoundry.models.mpt.configuration_mpt import REMOTE_CODE_MODEL_TYPE
from llmfoundry.utils.exceptions import ConfigError, MissingFileError, did_you_mean, first_line
from llmfoundry.utils.file_utils import looks_like_local_path
from llmfoundry.utils.hf_folder_checks import check_hf_folder

logger = logging.getLogger(__name__)

# The model_types our MPT classes read: transformers' name, and the one our exports write for a
# config that transformers' own MPT cannot run.
MPT_MODEL_TYPES = ("mpt", REMOTE_CODE_MODEL_TYPE)
# auto_map entries that mean "this checkpoint ships its own Python code for the model".
REMOTE_CODE_CLASSES = ("AutoConfig", "AutoModelForCausalLM")
# How each caller names the switch that allows shipped code.
YAML_TRUST_HINT = "set model.trust_remote_code: true to run the code it ships"
CLI_TRUST_HINT = "pass --trust_remote_code to run the code it ships"
NAME_KEY = "model.pretrained_model_name_or_path"


def register_auto_classes() -> None:
    """Make ``AutoConfig``/``AutoModel``/``AutoModelForCausalLM`` build our MPT classes.

    ``mpt`` replaces transformers' own MPT (as LLM Foundry's exporter did): ours reads every
    config the native class reads and computes the same function there, and also runs the
    options the native class ignores. Idempotent; called once when ``llmfoundry.models`` loads.
    """
    AutoConfig.register("mpt", MPTConfig, exist_ok=True)
    # AutoConfig.register insists that the key equal the class's model_type ("mpt"); the
    # mapping itself takes a second name for the same class.
    CONFIG_MAPPING.register(REMOTE_CODE_MODEL_TYPE, MPTConfig, exist_ok=True)
    AutoModel.register(MPTConfig, MPTModel, exist_ok=True)
    AutoModelForCausalLM.register(MPTConfig, MPTForCausalLM, exist_ok=True)


def read_config_dict(
    name: str, token: str | bool | None = None, key: str = NAME_KEY, **hub_kwargs: Any
) -> dict[str, Any]:
    """The raw ``config.json`` of ``name`` (a folder or Hub id), read without running any code.

    Args:
        name: the folder or Hub id.
        token: Hugging Face Hub token (or True for the stored one).
        key: the config key or flag that gave ``name``, for error messages.
        hub_kwargs: more ``get_config_dict`` options (``revision``).

    Raises:
        MissingFileError: if ``name`` is neither a folder with a config.json nor a reachable Hub model.
    """
    if looks_like_local_path(name) and not os.path.isdir(os.path.expanduser(name)):
        raise MissingFileError(
            f"{key}={name!r}: no such folder; give an existing model folder or a Hugging Face Hub id"
        )
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(
            os.path.expanduser(name), token=token, **hub_kwargs
        )
    except (OSError, ValueError) as err:
        raise MissingFileError(
            f"{key}={name!r} could not be read as a model folder or Hub model ({first_line(err)})"
        ) from err
    if not config_dict:  # transformers 5 returns {} for a folder without config.json
        raise MissingFileError(
            f"{key}={name!r} has no config.json; point it at a folder written by save_pretrained"
        )
    return config_dict


def check_model_code(
    name: str,
    config_dict: Mapping[str, Any],
    trust_remote_code: bool,
    trust_hint: str = YAML_TRUST_HINT,
    key: str = NAME_KEY,
) -> bool:
    """Decide which code builds the model in the folder whose ``config.json`` is ``config_dict``.

    An MPT folder (``model_type`` ``mpt`` or ``llmfoundry_mpt``) is built by our classes,
    whatever it ships. Other shipped code runs only with ``trust_remote_code``.

    Args:
        name: the folder or Hub id, for messages.
        config_dict: its config.json.
        trust_remote_code: whether the user allowed shipped code to run.
        trust_hint: how to allow it, in the caller's terms (:data:`YAML_TRUST_HINT`,
            :data:`CLI_TRUST_HINT`).
        key: the config key or flag that gave ``name``.

    Returns:
        True when the folder ships code for a ``model_type`` that transformers implements
        itself and the code is not trusted: transformers' own class is used instead, and its
        loading must then match the weights exactly.

    Raises:
        ConfigError: naming ``trust_hint`` if the code is needed and not trusted.
    """
    model_type = config_dict.get("model_type")
    auto_map = config_dict.get("auto_map") or {}
    ships_code = any(cls in auto_map for cls in REMOTE_CODE_CLASSES)
    if model_type in MPT_MODEL_TYPES or trust_remote_code or not ships_code:
        return False
    if model_type not in CONFIG_MAPPING:
        raise ConfigError(
            f"{key}={name!r} needs its own model code (model_type {model_type!r}, which neither "
            f"transformers nor llmfoundry implements); {trust_hint}"
        )
    logger.warning(
        "%s ships its own model code, which is not trusted: trying transformers' built-in '%s' "
        "implementation instead",
        name,
        model_type,
    )
    return True


def log_mpt_class_choice(name: str, config: Any) -> None:
    """Say so (one line) when an MPT config is one transformers' own MPT would misread.

    Such a folder (an LLM Foundry 0.22 export with learned positions, say) loads as our
    ``MPTForCausalLM``; transformers' ``MptForCausalLM`` would drop what it cannot express and
    compute another function.
    """
    if not isinstance(config, MPTConfig):
        return
    reasons = config.native_incompatibilities()
    if not reasons:
        return
    if config.learned_pos_emb:
        reasons.insert(0, "learned_pos_emb: true")
    elif config.attn_config.get("rope"):
        reasons.insert(0, "attn_config.rope: true")
    logger.info(
        "%s: transformers' MptForCausalLM cannot run this MPT config (%s): loading it with "
        "llmfoundry's MPTForCausalLM",
        name,
        reasons[0],
    )


def _merge_nested(
    current: Mapping[str, Any], update: Mapping[str, Any], path: str
) -> dict[str, Any]:
    """``current`` with ``update``'s keys replaced, recursing into dicts; new keys are errors."""
    merged = dict(current)
    for key, value in update.items():
        if key not in merged:
            raise ConfigError(
                f"{path}.{key} is not a key of this model's {path.rsplit('.', 1)[-1]}"
                f"{did_you_mean(str(key), merged)} (it has: {', '.join(map(str, merged))})"
            )
        if isinstance(value, Mapping) and isinstance(merged[key], Mapping):
            merged[key] = _merge_nested(merged[key], value, f"{path}.{key}")
        else:
            merged[key] = value
    return merged


def apply_config_overrides(
    config: PretrainedConfig, overrides: Mapping[str, Any], path: str = "model.config_overrides"
) -> None:
    """Set ``overrides`` on ``config`` in place; a dict value merges into an existing dict field.

    Raises:
        ConfigError: naming ``model.config_overrides.<key>`` for a key the config does not have
            (nested keys included) or a value of the wrong type.
    """
    for key, value in overrides.items():
        key_path = f"{path}.{key}"
        if not hasattr(config, key):
            known = config.to_dict()
            raise ConfigError(
                f"{key_path}: the model's {type(config).__name__} has no field '{key}'{did_you_mean(key, known)}"
            )
        current = getattr(config, key)
        if isinstance(value, Mapping) and isinstance(current, PretrainedConfig):
            apply_config_overrides(current, value, key_path)  # a sub-config (e.g. text_config)
            continue
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            value = _merge_nested(current, value, key_path)
        try:
            setattr(config, key, value)
        except (StrictDataclassError, TypeError, ValueError) as err:
            raise ConfigError(f"{key_path}={value!r} is invalid: {first_line(err)}") from err


def _builtin_mismatch_error(name: str, detail: str) -> ConfigError:
    return ConfigError(
        f"{NAME_KEY}={name!r} ships its own model code and transformers' built-in "
        f"implementation does not fit it ({detail}); {YAML_TRUST_HINT}"
    )


def _check_loaded_weights(name: str, info: Mapping[str, Any], model: Any, strict: bool) -> None:
    """Refuse a load that left weights unmatched where a silent mismatch would change the model.

    Raises:
        ConfigError: for a built-in class standing in for shipped code (``strict``) or our MPT.
    """
    unmatched = sorted([*info.get("missing_keys", []), *info.get("unexpected_keys", [])])
    if not unmatched:
        return
    if strict:
        raise _builtin_mismatch_error(name, f"unmatched weights: {unmatched[:4]}")
    if isinstance(model, MPTForCausalLM):
        raise ConfigError(
            f"{NAME_KEY}={name!r}: its weights do not fit llmfoundry's MPTForCausalLM for its "
            f"config.json (unmatched: {unmatched[:4]}); check that config.json belongs to them"
        )


def _materialize_on_cpu(model: PreTrainedModel) -> None:
    """Give a meta-device model real CPU storage and initial values.

    Sharding meta weights in place belongs to the distributed (FSDP) setup; without it, a
    meta-built model is filled in here so that it can run.
    """
    model.to_empty(device="cpu")
    model.init_weights()


def build_from_config(
    auto_class: Any, config: PretrainedConfig, init_device: str, options: Mapping[str, Any]
) -> PreTrainedModel:
    """A freshly initialized ``auto_class`` model of ``config``: ``meta``/``mixed`` build on
    the meta device, then materialize on CPU."""
    if init_device == "cpu":
        return auto_class.from_config(config, **options)
    with torch.device("meta"):
        model = auto_class.from_config(config, **options)
    _materialize_on_cpu(model)
    return model


def load_config(
    name: str,
    trust_remote_code: bool,
    builtin_fallback: bool = False,
    *,
    key: str = NAME_KEY,
    untrusted_hint: str = "",
    **hub_kwargs: Any,
) -> PretrainedConfig:
    """The model config of ``name``, as ``AutoConfig`` reads it (an MPT one: see
    :func:`log_mpt_class_choice`).

    Args:
        name: the folder or Hub id.
        trust_remote_code: whether the code it ships may run.
        builtin_fallback: transformers' built-in class stands in for untrusted shipped code.
        key: the config key or flag that gave ``name``, for messages.
        untrusted_hint: appended to the message when the code was not trusted.
        hub_kwargs: ``from_pretrained`` options (``token``, ``revision``).

    Raises:
        ConfigError: naming ``key`` if it cannot be read.
    """
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, **hub_kwargs)
    except (OSError, StrictDataclassError, ValueError) as err:
        if builtin_fallback:
            raise _builtin_mismatch_error(name, first_line(err)) from err
        hint = "" if trust_remote_code else untrusted_hint
        raise ConfigError(
            f"{key}={name!r}: its config could not be loaded ({first_line(err)}){hint}"
        ) from err
    log_mpt_class_choice(name, config)
    return config


def load_hf_model(
    name: str,
    auto_class: Any = AutoModelForCausalLM,
    *,
    pretrained: bool = True,
    config_overrides: Mapping[str, Any] | None = None,
    trust_remote_code: bool = False,
    token: str | bool | None = None,
    attn_implementation: str | None = None,
    init_device: str = "cpu",
    quantization_config: Any | None = None,
    check_config: Callable[[PretrainedConfig], None] | None = None,
) -> PreTrainedModel:
    """Load (``pretrained``) or build from its config an ``auto_class`` model (a causal LM by
    default, or e.g. ``AutoModelForSeq2SeqLM``), in fp32 for training.

    ``init_device: meta`` / ``mixed`` build a from-config model on the meta device, then
    materialize it on CPU; pretrained weights are always loaded on CPU. An MPT folder is built
    by our ``MPTForCausalLM`` (see :func:`check_model_code`). ``check_config`` sees the config
    (overrides applied) before any weights are read.

    Raises:
        MissingFileError: if ``name`` cannot be found.
        ConfigError: if remote code is needed but not trusted, or an override/option does not
            fit, or from ``check_config``.
    """
    config_dict = read_config_dict(name, token)
    builtin_fallback = check_model_code(name, config_dict, trust_remote_code)
    if pretrained and os.path.isdir(name):  # missing or cut weights: one line, not a traceback
        check_hf_folder(name, NAME_KEY)
    config = load_config(name, trust_remote_code, builtin_fallback, token=token)
    apply_config_overrides(config, config_overrides or {})
    if check_config is not None:
        check_config(config)
    options: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if attn_implementation is not None:
        options["attn_implementation"] = attn_implementation
    try:
        if pretrained:
            if init_device != "cpu":
                logger.info(
                    "init_device=%s with pretrained weights: loading them on CPU", init_device
                )
            # transformers 5 loads in the checkpoint's dtype by default; training wants fp32
            # master weights (Composer's autocast handles lower precision).
            loaded: Any = auto_class.from_pretrained(
                name,
                config=config,
                token=token,
                dtype=torch.float32,
                quantization_config=quantization_config,
                output_loading_info=True,
                **options,
            )
            model, info = loaded
            _check_loaded_weights(name, info, model, builtin_fallback)
        else:
            model = build_from_config(auto_class, config, init_device, options)
    except (RuntimeError, StrictDataclassError, ValueError) as err:
        if builtin_fallback:
            raise _builtin_mismatch_error(name, first_line(err)) from err
        if pretrained and "mismatched_sizes" in str(err):
            cause = "check model.config_overrides" if config_overrides else "its config.json is off"
            raise ConfigError(
                f"{NAME_KEY}={name!r}: its weights do not fit the model config (the load report "
                f"above lists them); {cause}"
            ) from err
        if attn_implementation is not None and "attention" in str(err).lower():
            raise ConfigError(
                f"model.attn_implementation={attn_implementation!r} does not work with "
                f"{name!r}: {first_line(err)}"
            ) from err
        raise
    return cast(PreTrainedModel, model)
