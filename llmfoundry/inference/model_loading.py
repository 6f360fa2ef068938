"""Load a causal LM and its tokenizer for the inference commands (generate, chat, benchmark,
serve, web UI, LoRA merge), with LLM Foundry's ``hf_generate.py`` loading flags.

:func:`load_model_and_tokenizer` takes a :class:`ModelSource` (the model folder or hub name,
dtype, device or device map, attention implementation, hub revision and token, ``max_seq_len``
and a peft LoRA adapter) and turns what goes wrong into one-line user errors that name the flag.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, cast

import torch
from transformers import (
    AutoModelForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from llmfoundry.inference.options import ModelSource
from llmfoundry.models.hf.export import dtype_of_precision
from llmfoundry.models.hf.loading import load_config
from llmfoundry.models.mpt.configuration_mpt import ATTN_IMPLS as MPT_ATTN_IMPLS
from llmfoundry.utils.config_checks import PositiveInt, check_value
from llmfoundry.utils.constants import HF_ATTN_IMPLEMENTATIONS
from llmfoundry.utils.exceptions import (
    ConfigError,
    MissingDependencyError,
    MissingFileError,
    first_line,
)
from llmfoundry.utils.file_utils import looks_like_local_path
from llmfoundry.utils.tokenizer_utils import build_tokenizer

logger = logging.getLogger(__name__)

__all__ = [
    "ADAPTER_CONFIG",
    "TOKENIZER_FILES",
    "ModelSource",
    "adapter_tokenizer_source",
    "apply_adapter",
    "context_length_of",
    "default_device",
    "load_model_and_tokenizer",
]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
ADAPTER_CONFIG = "adapter_config.json"


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _attn_options(config: PretrainedConfig, attn_impl: str | None) -> dict[str, Any]:
    """How to ask for ``attn_impl``: edit an MPT config's ``attn_config``, else ``attn_implementation``.

    Raises:
        ConfigError: for a name the model does not know.
        MissingDependencyError: for a FlashAttention implementation without flash-attn installed.
    """
    if attn_impl is None:
        return {}
    attn_config = getattr(config, "attn_config", None)
    is_our_mpt = isinstance(attn_config, dict)
    allowed = MPT_ATTN_IMPLS if is_our_mpt else HF_ATTN_IMPLEMENTATIONS
    if attn_impl not in allowed:
        raise ConfigError(
            f"--attn_impl={attn_impl!r} is not supported by this model; choose one of {', '.join(allowed)}"
        )
    if (
        attn_impl in ("flash", "flash_attention_2")
        and importlib.util.find_spec("flash_attn") is None
    ):
        raise MissingDependencyError(
            f"--attn_impl={attn_impl} needs flash-attn, which is not installed; "
            "install the 'gpu' extra (pip install 'llm-foundry[gpu]') or use sdpa"
        )
    if is_our_mpt:
        config.attn_config = {**cast(dict[str, Any], attn_config), "attn_impl": attn_impl}
        return {}
    return {"attn_implementation": attn_impl}


# Config attributes that hold a model's context length, by model family: ours and MPT's first
# (what --max_seq_len sets), then transformers' usual name, GPT-2's and others'.
CONTEXT_LENGTH_KEYS = (
    "max_seq_len",
    "max_position_embeddings",
    "n_positions",
    "n_ctx",
    "seq_length",
)


def context_length_of(model: PreTrainedModel) -> int | None:
    """The most tokens (prompt plus completion) the model's config allows, or None if it names
    no length (:data:`CONTEXT_LENGTH_KEYS`)."""
    config = getattr(model, "config", None)
    for key in CONTEXT_LENGTH_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _set_max_seq_len(config: PretrainedConfig, max_seq_len: int | None, name: str) -> None:
    """Set ``config.max_seq_len`` for ``--max_seq_len`` (LLM Foundry sets it where it exists).

    A model with learned position embeddings keeps its trained length when asked for less
    (its table of positions is part of the weights); the caller limits its inputs instead.

    Raises:
        ConfigError: for a length below 1, or more positions than a model with learned
            position embeddings has.
    """
    if max_seq_len is None:
        return
    check_value(max_seq_len, PositiveInt, "--max_seq_len")
    current = getattr(config, "max_seq_len", None)
    if not isinstance(current, int):
        logger.warning(
            "--max_seq_len=%d does not change the model: the config of %s has no max_seq_len",
            max_seq_len,
            name,
        )
        return
    if getattr(config, "learned_pos_emb", False):
        if max_seq_len > current:
            raise ConfigError(
                f"--max_seq_len={max_seq_len} is more than {name!r} can take: it has learned "
                f"position embeddings for {current} positions; pass at most {current}"
            )
        return
    config.max_seq_len = max_seq_len


def _check_device_map(device_map: str | None) -> None:
    if device_map is not None and importlib.util.find_spec("accelerate") is None:
        raise MissingDependencyError(
            f"--device_map={device_map} needs the 'accelerate' package, which is not installed; "
            "pip install accelerate, or use --device instead"
        )


def check_device(device: str | None) -> None:
    """Fail in one line on a ``--device`` torch cannot place the model on here.

    Raises:
        ConfigError: for a name torch does not know, or a CUDA device this machine lacks.
    """
    if device is None:
        return
    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(
            f"--device={device!r} is not a torch device (cpu, cuda, cuda:1, ...)"
        ) from err
    if parsed.type != "cuda":
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"--device={device!r}: this machine has no CUDA device; use --device cpu")
    if parsed.index is not None and parsed.index >= count:
        raise ConfigError(
            f"--device={device!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
        )


def adapter_tokenizer_source(adapter: str | None) -> str | None:
    """The adapter folder when it holds tokenizer files (a finetune may have added tokens), else None."""
    if adapter is None or not os.path.isdir(adapter):
        return None
    return (
        adapter if any(os.path.isfile(os.path.join(adapter, f)) for f in TOKENIZER_FILES) else None
    )


def apply_adapter(
    model: PreTrainedModel, adapter: str, token: str | bool | None = None
) -> PreTrainedModel:
    """Wrap ``model`` with the peft LoRA adapter saved in ``adapter`` (for inference).

    Returns:
        A ``peft.PeftModel``; it generates like the model it wraps.

    Raises:
        MissingFileError: if the adapter folder or its ``adapter_config.json`` does not exist.
        ConfigError: if the adapter was made for another base model (modules or shapes differ).
    """
    from peft import PeftModel

    path = os.path.expanduser(adapter)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, ADAPTER_CONFIG)):
            raise MissingFileError(
                f"--adapter={adapter!r} has no {ADAPTER_CONFIG}; pass the folder peft's save_pretrained wrote"
            )
    elif looks_like_local_path(path) or os.path.exists(path):
        raise MissingFileError(f"--adapter={adapter!r}: no such folder")
    try:
        wrapped = PeftModel.from_pretrained(model, path, is_trainable=False, token=token)
    except (RuntimeError, ValueError, KeyError) as err:
        # peft reports a foreign adapter as missing target modules (ValueError) or as
        # size mismatches while loading its weights (RuntimeError).
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = next((line for line in lines if "size mismatch" in line), first_line(err))
        raise ConfigError(
            f"--adapter={adapter!r} does not fit the base model ({detail}); "
            "use the base model the adapter was trained on"
        ) from err
    return cast(PreTrainedModel, wrapped.eval())


def load_model_and_tokenizer(
    source: ModelSource, flag: str = "--name_or_path"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer for generation (left padding for batches).

    Args:
        source: which model and how (see :class:`ModelSource`); a device of None means CPU
            here. ``autocast_dtype`` is not used by loading (see
            :func:`~llmfoundry.inference.generate.load_for_generation`).
        flag: the command's flag for ``source.name_or_path``, named in messages (``--base``).

    Returns:
        The model in eval mode (a ``peft.PeftModel`` with an adapter) and the tokenizer.

    Raises:
        ConfigError: on an unknown dtype or attention implementation, an unloadable config or
            an adapter that does not fit.
        MissingFileError: if a local model or adapter folder does not exist.
        MissingDependencyError: for ``device_map`` without accelerate, or FlashAttention
            without flash-attn.
    """
    name = source.name_or_path
    dtype = dtype_of_precision(source.model_dtype, "--model_dtype")  # before any slow loading
    if looks_like_local_path(name) and not Path(name).expanduser().exists():
        raise MissingFileError(f"{flag}: model folder '{name}' does not exist")
    _check_device_map(source.device_map)
    if source.device_map is None:
        check_device(source.device)
    config = load_config(
        name,
        source.trust_remote_code,
        key=flag,
        untrusted_hint="; if it ships its own model code add --trust_remote_code",
        **source.hub_kwargs,
    )
    options = {**_attn_options(config, source.attn_impl), "dtype": dtype}
    _set_max_seq_len(config, source.max_seq_len, name)
    tokenizer_kwargs = {"trust_remote_code": source.trust_remote_code, **source.hub_kwargs}
    tokenizer = build_tokenizer(adapter_tokenizer_source(source.adapter) or name, tokenizer_kwargs)
    tokenizer.padding_side = "left"
    model = _from_pretrained(source, config, options)
    if source.device_map is None:
        torch.nn.Module.to(model, torch.device(source.device or "cpu"))
    if source.adapter is not None:
        embeddings = model.get_input_embeddings()
        if (
            isinstance(embeddings, torch.nn.Embedding)
            and len(tokenizer) > embeddings.num_embeddings
        ):
            # An adapter trained with added tokens saved the grown embeddings; make room for them.
            model.resize_token_embeddings(len(tokenizer))
        model = apply_adapter(model, source.adapter, source.use_auth_token)
    return model.eval(), tokenizer


def _from_pretrained(
    source: ModelSource, config: PretrainedConfig, options: dict[str, Any]
) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` for ``source``, with an attention
    implementation the model rejects turned into a user error."""
    if source.device_map is not None:
        options = {**options, "device_map": source.device_map}
    try:
        return AutoModelForCausalLM.from_pretrained(
            source.name_or_path,
            config=config,
            trust_remote_code=source.trust_remote_code,
            **source.hub_kwargs,
            **options,
        )
    except ValueError as err:
        if source.attn_impl is not None and "attn" in str(err).lower():
            raise ConfigError(
                f"--attn_impl={source.attn_impl!r} does not work with "
                f"{source.name_or_path!r}: {first_line(err)}"
            ) from err
        raise
