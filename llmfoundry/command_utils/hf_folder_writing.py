"""Writing what a Composer checkpoint holds as a Hugging Face folder: a full model (MPT with
its bundled sources, or any transformers causal LM), a LoRA adapter folder, or the base model
with the adapter merged in.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import peft
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from llmfoundry.command_utils.composer_checkpoint import CheckpointContents
from llmfoundry.models.hf.export import build_with_weights, save_tokenizer, write_mpt_folder
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.utils.checkpoint_utils import weights_mismatch_error
from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError, first_line
from llmfoundry.utils.file_utils import looks_like_local_path
from llmfoundry.utils.object_store import is_remote

# --- building models from the recorded config ---------------------------------------------


def hf_config_from_contents(contents: CheckpointContents) -> PretrainedConfig:
    """The model config recorded in the checkpoint, as a config object.

    Raises:
        ConfigError: if the architecture needs code that transformers does not include.
    """
    if contents.is_mpt:
        return MPTConfig.from_dict(dict(contents.config))
    model_type = str(contents.config.get("model_type"))
    if model_type not in CONFIG_MAPPING:
        raise ConfigError(
            f"'{contents.source}' holds a {contents.class_name} model of type {model_type!r}, "
            "which transformers does not implement; only MPT and transformers' own "
            "architectures convert"
        )
    content = {k: v for k, v in contents.config.items() if k != "auto_map"}
    return CONFIG_MAPPING[model_type].from_dict(content)


def causal_lm_class(
    contents: CheckpointContents, config: PretrainedConfig
) -> type[PreTrainedModel]:
    """The model class to rebuild: the recorded one (or the adapter's base) from transformers.

    Raises:
        ConfigError: if transformers has no causal LM class for the config.
    """
    if isinstance(config, MPTConfig):
        return MPTForCausalLM
    for name in (contents.class_name, *(contents.config.get("architectures") or [])):
        found = getattr(transformers, name, None) if name else None
        if isinstance(found, type) and issubclass(found, PreTrainedModel):
            return found
    try:
        return cast(type[PreTrainedModel], MODEL_FOR_CAUSAL_LM_MAPPING[type(config)])
    except KeyError as err:
        raise ConfigError(
            f"'{contents.source}' holds a {contents.class_name} model, for which transformers has "
            "no causal LM class"
        ) from err


def _empty_model(model_class: type[PreTrainedModel], config: PretrainedConfig) -> PreTrainedModel:
    """``model_class(config)`` on the meta device: no memory, no initialization."""
    if isinstance(config, MPTConfig):
        config.init_device = "cpu"
    with torch.device("meta"):
        return model_class(config)


def _cast(model: torch.nn.Module, dtype: torch.dtype) -> None:
    # nn.Module.to: transformers' own ``to`` refuses some models (quantized ones) for no gain here.
    torch.nn.Module.to(model, dtype)


def _weights_mismatch(contents: CheckpointContents, err: BaseException) -> DatasetError:
    return DatasetError(
        f"the weights in '{contents.source}' do not fit the model config it records "
        f"({first_line(err)})"
    )


# --- writing each kind ----------------------------------------------------------------------


def write_full_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, folder: Path
) -> None:
    """Write ``model`` and its tokenizer to ``folder`` (an MPT with its bundled sources)."""
    if isinstance(model, MPTForCausalLM):
        write_mpt_folder(model, tokenizer, folder)
        return
    model.save_pretrained(folder)
    if tokenizer is not None:
        save_tokenizer(tokenizer, folder)


def build_full_model(contents: CheckpointContents, dtype: torch.dtype) -> PreTrainedModel:
    """The recorded model class holding the checkpoint's weights in ``dtype``.

    Raises:
        DatasetError: if the weights do not fit the recorded config.
    """
    config = hf_config_from_contents(contents)
    model_class = causal_lm_class(contents, config)
    try:
        return build_with_weights(model_class, config, contents.weights, dtype)
    except RuntimeError as err:
        empty = _empty_model(model_class, config)
        raise weights_mismatch_error(contents.source, contents.weights, empty) from err


def _lora_config(contents: CheckpointContents, base_model: str | None) -> peft.LoraConfig:
    """The adapter config recorded in the checkpoint (its base name replaced by ``base_model``).

    Raises:
        ConfigError: for an adapter type other than LoRA.
    """
    assert contents.peft_config is not None
    config = peft.get_peft_config(dict(contents.peft_config))
    if not isinstance(config, peft.LoraConfig):
        raise ConfigError(
            f"'{contents.source}' holds a {type(config).__name__} adapter; only LoRA converts"
        )
    if base_model is not None:
        config.base_model_name_or_path = base_model
    return config


def _peft_model(base: PreTrainedModel, lora_config: peft.LoraConfig) -> peft.PeftModel:
    """``base`` wrapped with an (empty) adapter of ``lora_config``, ready for the saved weights."""
    # get_peft_model records the name of the model it is given as the adapter's base: give a
    # model built from the config (which has none) the name of the real base.
    base.name_or_path = lora_config.base_model_name_or_path or ""
    return cast(peft.PeftModel, peft.get_peft_model(base, lora_config, low_cpu_mem_usage=True))


def _assign_adapter_weights(
    model: peft.PeftModel, contents: CheckpointContents, base_source: str | None
) -> None:
    """Put the checkpoint's weights into ``model`` (the adapter's, and the base's if saved).

    Raises:
        DatasetError: if the weights do not fit the model.
    """
    try:
        result = model.load_state_dict(contents.weights, strict=False, assign=True)
    except RuntimeError as err:
        if base_source is None:
            raise _weights_mismatch(contents, err) from err
        raise DatasetError(
            f"the LoRA weights in '{contents.source}' do not fit the base model {base_source!r} "
            f"({first_line(err)}); pass --base_model with the model the adapter was trained on"
        ) from err
    if result.unexpected_keys:
        raise DatasetError(
            f"'{contents.source}' holds weights the LoRA model does not have: "
            f"{result.unexpected_keys[:4]}"
        )
    empty = [n for n, p in model.named_parameters() if "lora_" in n and p.is_meta]
    if empty:
        raise DatasetError(f"'{contents.source}' lacks the LoRA weights {empty[:4]}")


def _base_model_source(contents: CheckpointContents, base_model: str | None) -> tuple[str, str]:
    """The base model to merge into and where its name came from.

    Raises:
        MissingFileError: if neither ``base_model`` nor the checkpoint names one.
    """
    if base_model:
        return base_model, "--base_model"
    recorded = (contents.peft_config or {}).get("base_model_name_or_path")
    if recorded:
        return str(recorded), "the adapter config recorded in the checkpoint"
    recorded = contents.config.get("_name_or_path")
    if recorded:
        return str(recorded), "the model config recorded in the checkpoint"
    raise MissingFileError(
        f"'{contents.source}' holds only the LoRA weights and names no base model to merge them "
        "into; pass --base_model with the base model's folder or Hub id"
    )


def _load_base_model(
    contents: CheckpointContents, base_model: str | None, trust_remote_code: bool
) -> tuple[PreTrainedModel, str]:
    """The LoRA adapter's base model with its real weights (fp32), and its name.

    Raises:
        MissingFileError: if it cannot be found or loaded.
    """
    name, origin = _base_model_source(contents, base_model)
    if not is_remote(name) and looks_like_local_path(name) and not Path(name).expanduser().is_dir():
        raise MissingFileError(
            f"the LoRA base model '{name}' (from {origin}) does not exist; pass --base_model "
            "with the base model's folder or Hub id"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(Path(name).expanduser()) if not is_remote(name) else name,
            dtype=torch.float32,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as err:
        raise MissingFileError(
            f"the LoRA base model '{name}' (from {origin}) could not be loaded "
            f"({first_line(err)}); pass --base_model with the base model's folder or Hub id"
        ) from err
    return cast(PreTrainedModel, model), name


def write_lora(
    contents: CheckpointContents,
    folder: Path,
    dtype: torch.dtype,
    merge: bool,
    base_model: str | None,
    trust_remote_code: bool,
) -> None:
    """Write the adapter folder, or (``merge``) the base model with the adapter folded in."""
    lora_config = _lora_config(contents, base_model)
    config = hf_config_from_contents(contents)
    model_class = causal_lm_class(contents, config)
    base_source = None
    if merge and not contents.holds_base_weights:
        base, base_source = _load_base_model(contents, base_model, trust_remote_code)
        lora_config.base_model_name_or_path = base_source
    else:
        # The adapter alone needs no base weights; a full checkpoint brings its own.
        base = _empty_model(model_class, config)
    model = _peft_model(base, lora_config)
    _assign_adapter_weights(model, contents, base_source)
    if not merge:
        adapter = {
            name: tensor.to(dtype) if tensor.is_floating_point() else tensor
            for name, tensor in model.state_dict().items()
            if "lora_" in name
        }
        # peft picks the adapter's weights out of the state dict and names them as its own
        # save_pretrained does (adapter name removed), next to adapter_config.json.
        model.save_pretrained(str(folder), state_dict=adapter)
        if contents.tokenizer is not None:
            save_tokenizer(contents.tokenizer, folder)
        return
    if any(p.is_meta for n, p in model.named_parameters() if "lora_" not in n):
        raise DatasetError(f"'{contents.source}' lacks some of the base model's weights")
    merged = cast(PreTrainedModel, model.merge_and_unload())
    if getattr(merged.config, "tie_word_embeddings", False):
        merged.tie_weights()
    _cast(merged, dtype)
    write_full_model(merged, contents.tokenizer, folder)
