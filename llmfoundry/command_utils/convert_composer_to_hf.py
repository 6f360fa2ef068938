"""Convert a Composer checkpoint of an MPT model into a Hugging Face folder.

The folder holds ``model.safetensors``, ``config.json`` (with ``auto_map`` pointing at the
bundled code), the tokenizer files, and the self-contained MPT source files, so that
``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` loads it anywhere.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from composer.utils import get_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from llmfoundry.models.hf.export import AUTO_MAP, OUTPUT_DTYPES, save_mpt_as_hf
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.utils.checkpoint_utils import load_composer_checkpoint
from llmfoundry.utils.exceptions import ConfigError, DatasetError

logger = logging.getLogger(__name__)

# The export helpers live in ``llmfoundry.models.hf.export`` (callbacks use them too); these
# names stay importable from here.
__all__ = [
    "AUTO_MAP",
    "OUTPUT_DTYPES",
    "convert_composer_to_hf",
    "mpt_config_from_checkpoint",
    "mpt_model_from_checkpoint",
    "save_mpt_as_hf",
    "tokenizer_from_checkpoint",
]

MODEL_PREFIX = "model."


def _huggingface_metadata(state: dict[str, Any], path: str) -> dict[str, Any]:
    try:
        return state["state"]["integrations"]["huggingface"]
    except KeyError as err:
        raise DatasetError(
            f"'{path}' has no Hugging Face metadata (state.integrations.huggingface); "
            "it was not saved from a Hugging Face-based Composer model"
        ) from err


def mpt_config_from_checkpoint(state: dict[str, Any], path: str) -> MPTConfig:
    """The ``MPTConfig`` stored in a Composer checkpoint's Hugging Face metadata.

    Raises:
        ConfigError: if the checkpoint holds a model other than MPT.
    """
    model_meta = _huggingface_metadata(state, path)["model"]["config"]
    class_name = str(model_meta.get("class", ""))
    if not class_name.endswith("MPTForCausalLM"):
        raise ConfigError(
            f"'{path}' holds a {class_name or 'unknown'} model; only MPT checkpoints convert so far"
        )
    config = MPTConfig.from_dict(dict(model_meta["content"]))
    assert isinstance(config, MPTConfig)
    return config


def tokenizer_from_checkpoint(state: dict[str, Any], path: str) -> PreTrainedTokenizerBase | None:
    """Rebuild the tokenizer whose files Composer stored in the checkpoint (None if absent)."""
    files = _huggingface_metadata(state, path).get("tokenizer") or {}
    if not files:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        for name, entry in files.items():
            content = entry["content"]
            target = Path(tmp) / name
            if entry["file_extension"] == ".json":
                target.write_text(json.dumps(content), encoding="utf-8")
            elif entry["file_extension"] == ".txt":
                target.write_text("\n".join(content), encoding="utf-8")
            elif entry["file_extension"] == ".model":
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
        return AutoTokenizer.from_pretrained(tmp)


def mpt_model_from_checkpoint(state: dict[str, Any], config: MPTConfig) -> MPTForCausalLM:
    """Build an ``MPTForCausalLM`` holding the checkpoint's weights (no random init on the way).

    Raises:
        DatasetError: if the weights do not match the config.
    """
    weights = {
        key[len(MODEL_PREFIX) :]: value
        for key, value in state["state"]["model"].items()
        if key.startswith(MODEL_PREFIX)
    }
    config.init_device = "cpu"
    with torch.device("meta"):
        model = MPTForCausalLM(config)
    result = model.load_state_dict(weights, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise DatasetError(
            f"checkpoint weights do not match the model config: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return model.eval()


def convert_composer_to_hf(
    composer_path: str,
    hf_output_path: str,
    output_precision: str = "fp32",
    local_checkpoint_save_location: str | None = None,
) -> Path:
    """Convert a Composer MPT checkpoint (local path or object-store URI) to a Hugging Face folder.

    Args:
        composer_path: the ``.pt`` checkpoint.
        hf_output_path: the folder to write.
        output_precision: ``fp32``, ``fp16`` or ``bf16`` (or ``float32``/``float16``/``bfloat16``).
        local_checkpoint_save_location: where to keep a downloaded remote checkpoint.

    Returns:
        The output folder.

    Raises:
        MissingFileError, DatasetError, ConfigError: on a missing or unusable checkpoint.
    """
    with tempfile.TemporaryDirectory() as tmp:
        local_path = local_checkpoint_save_location or str(Path(tmp) / "checkpoint.pt")
        if "://" in composer_path:
            get_file(composer_path, local_path, overwrite=True)
        else:
            local_path = composer_path
        state = load_composer_checkpoint(local_path)
    config = mpt_config_from_checkpoint(state, composer_path)
    tokenizer = tokenizer_from_checkpoint(state, composer_path)
    model = mpt_model_from_checkpoint(state, config)
    out = save_mpt_as_hf(model, tokenizer, hf_output_path, output_precision)
    logger.info("wrote Hugging Face model (%s) to %s", output_precision, out)
    return out
