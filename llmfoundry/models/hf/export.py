"""Writing models as Hugging Face folders: the dtype names, MPT's bundled code, weight copies.

Shared by the offline converter (``command_utils.convert_composer_to_hf``) and the
``hf_checkpointer`` callback, which exports while training runs. An exported MPT folder holds
``model.safetensors``, ``config.json`` (whose ``auto_map`` points at the bundled code), the
tokenizer files and the standalone MPT sources, so that
``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` loads it anywhere,
transformers 4.x (LLM Foundry 0.22's) included; where ``llmfoundry`` is imported, our registered
classes load it without the flag (``models.hf.loading``).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, get_args

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llmfoundry.models import mpt as mpt_package
from llmfoundry.models.mpt import MPTForCausalLM
from llmfoundry.utils.constants import DTYPE_NAMES, PrecisionName
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.file_utils import atomic_directory

# The dtype of each short precision name (the commands' ``--output_precision``/``--model_dtype``/
# ``--dtype`` choices).
PRECISION_DTYPES: dict[str, torch.dtype] = {
    short: getattr(torch, long) for short, long in DTYPE_NAMES.items()
}
# The long names (the callback's ``precision`` values in LLM Foundry YAMLs), same dtypes.
LONG_DTYPE_NAMES = {long: short for short, long in DTYPE_NAMES.items()}
PRECISION_CHOICES: tuple[str, ...] = get_args(PrecisionName)
AUTO_MAP = {
    "AutoConfig": "configuration_mpt.MPTConfig",
    "AutoModelForCausalLM": "modeling_mpt.MPTForCausalLM",
}

# tokenizer_class names transformers 5 writes that transformers 4 lacks, and the 4.x class that
# reads the same files (tokenizer.json). Concrete names (GPT2Tokenizer, LlamaTokenizer) exist in
# both and are kept.
V4_TOKENIZER_CLASSES = {"TokenizersBackend": "PreTrainedTokenizerFast"}
TOKENIZER_CONFIG = "tokenizer_config.json"

ModelT = TypeVar("ModelT", bound=PreTrainedModel)


def dtype_of_precision(precision: str, key: str) -> torch.dtype:
    """The dtype named by ``precision``: ``float32``/``bfloat16``/``float16`` or ``fp32``/``bf16``/``fp16``.

    Args:
        precision: the name.
        key: the config key or flag that gave it, for the error message.

    Raises:
        ConfigError: naming ``key`` and the valid choices for an unknown name.
    """
    short = LONG_DTYPE_NAMES.get(precision, precision)
    if short not in PRECISION_DTYPES:
        raise ConfigError(
            f"{key}={precision!r} is not a supported precision; choose one of "
            f"{', '.join(PRECISION_CHOICES)}"
        )
    return PRECISION_DTYPES[short]


def copy_mpt_code(folder: str | Path) -> None:
    """Copy the standalone MPT sources into ``folder`` (what ``trust_remote_code`` runs)."""
    source_dir = Path(mpt_package.__file__).parent
    for source in sorted(source_dir.glob("*.py")):
        if source.name != "__init__.py":
            shutil.copy2(source, Path(folder) / source.name)


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> None:
    """``tokenizer.save_pretrained(folder)``, readable by transformers 4.x as well.

    transformers 5 records a fast tokenizer's class as ``TokenizersBackend``, which 4.x
    (LLM Foundry 0.22's) cannot resolve; the folder names ``PreTrainedTokenizerFast`` instead,
    which both read from the same ``tokenizer.json``.
    """
    tokenizer.save_pretrained(folder)
    config_path = Path(folder) / TOKENIZER_CONFIG
    if not config_path.is_file() or not (Path(folder) / "tokenizer.json").is_file():
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    v4_name = V4_TOKENIZER_CLASSES.get(str(config.get("tokenizer_class")))
    if v4_name is not None:
        config["tokenizer_class"] = v4_name
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", "utf-8")


def copy_with_weights(
    model: ModelT, state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype
) -> ModelT:
    """A new model of ``model``'s class and config holding ``state_dict`` cast to ``dtype``.

    ``model`` itself is left untouched (training may go on with it); the copy is built on the
    meta device, so no memory is spent on an initialization that is overwritten at once.

    Args:
        model: the model whose class and config the copy takes (its weights are not read).
        state_dict: every persistent weight of the model, by name.
        dtype: the floating-point dtype of the copy.

    Returns:
        The copy, in eval mode, on the device of the ``state_dict`` tensors.
    """
    return build_with_weights(type(model), copy.deepcopy(model.config), state_dict, dtype)


def build_with_weights(
    model_class: type[ModelT],
    config: Any,
    state_dict: Mapping[str, torch.Tensor],
    dtype: torch.dtype,
) -> ModelT:
    """A ``model_class(config)`` holding ``state_dict`` cast to ``dtype``, built without an init.

    The model is built on the meta device and the weights are assigned, not copied. Buffers
    that are not saved in a state dict (rotary tables, say) stay on the meta device: the
    model is fit for ``save_pretrained`` and weight surgery, not for running.

    Args:
        model_class: a ``PreTrainedModel`` subclass.
        config: its config (an MPT config's ``init_device`` is set to ``cpu``).
        state_dict: every persistent weight of the model, by name.
        dtype: the floating-point dtype of the weights.

    Returns:
        The model, in eval mode.

    Raises:
        RuntimeError: if ``state_dict`` does not match the model's weights.
    """
    if issubclass(model_class, MPTForCausalLM):
        config.init_device = "cpu"  # built on meta below whatever the run asked for
    with torch.device("meta"):
        model = model_class(config)
    weights = {
        name: tensor.to(dtype) if tensor.is_floating_point() else tensor
        for name, tensor in state_dict.items()
    }
    model.load_state_dict(weights, strict=True, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()  # the cast above made separate copies of tied weights
    return model.eval()


def write_mpt_folder(
    model: MPTForCausalLM, tokenizer: PreTrainedTokenizerBase | None, folder: str | Path
) -> None:
    """Save ``model`` (in its current dtype), ``tokenizer`` and the MPT sources into ``folder``.

    Sets ``auto_map`` and ``architectures`` on ``model.config`` so that the folder loads with
    ``AutoModelForCausalLM`` and ``trust_remote_code=True``.
    """
    model.config.auto_map = dict(AUTO_MAP)
    model.config.architectures = ["MPTForCausalLM"]
    model.save_pretrained(folder)
    if tokenizer is not None:
        save_tokenizer(tokenizer, folder)
    copy_mpt_code(folder)


def save_mpt_as_hf(
    model: MPTForCausalLM,
    tokenizer: PreTrainedTokenizerBase | None,
    output_path: str | Path,
    output_precision: str,
) -> Path:
    """Cast ``model`` to ``output_precision`` in place and write it with ``tokenizer`` as an HF folder.

    The folder appears complete or not at all: it is written under a temporary name first.

    Args:
        model: the model; it is cast to the output dtype.
        tokenizer: saved alongside when given.
        output_path: the folder to write (replaced if it exists).
        output_precision: ``fp32``/``fp16``/``bf16`` (or ``float32``/``float16``/``bfloat16``).

    Returns:
        The output folder.

    Raises:
        ConfigError: for an unknown precision.
    """
    dtype = dtype_of_precision(output_precision, "--output_precision")
    torch.nn.Module.to(model, dtype)
    with atomic_directory(output_path) as staging:
        write_mpt_folder(model, tokenizer, staging)
    return Path(output_path)
