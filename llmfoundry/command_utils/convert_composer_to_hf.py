"""Convert a Composer checkpoint of an MPT model into a Hugging Face folder.

The folder holds ``model.safetensors``, ``config.json`` (with ``auto_map`` pointing at the
bundled code), the tokenizer files, and the self-contained MPT source files, so that
``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` loads it anywhere.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from composer.utils import get_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from llmfoundry.models import mpt as mpt_package
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.utils.checkpoint_utils import load_composer_checkpoint
from llmfoundry.utils.exceptions import ConfigError, DatasetError
from llmfoundry.utils.file_utils import atomic_directory

logger = logging.getLogger(__name__)

OUTPUT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
AUTO_MAP = {
    "AutoConfig": "configuration_mpt.MPTConfig",
    "AutoModelForCausalLM": "modeling_mpt.MPTForCausalLM",
}
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


def _copy_model_code(folder: Path) -> None:
    """Copy the standalone MPT sources next to the weights (for ``trust_remote_code``)."""
    source_dir = Path(mpt_package.__file__).parent
    for source in sorted(source_dir.glob("*.py")):
        if source.name != "__init__.py":
            shutil.copy2(source, folder / source.name)


def save_mpt_as_hf(
    model: MPTForCausalLM,
    tokenizer: PreTrainedTokenizerBase | None,
    output_path: str | Path,
    output_precision: str,
) -> Path:
    """Write ``model`` (cast to ``output_precision``) and ``tokenizer`` as a loadable HF folder.

    The folder appears complete or not at all: it is written under a temporary name first.
    """
    if output_precision not in OUTPUT_DTYPES:
        raise ConfigError(
            f"--output_precision={output_precision!r}: choose one of {', '.join(OUTPUT_DTYPES)}"
        )
    torch.nn.Module.to(model, OUTPUT_DTYPES[output_precision])
    model.config.auto_map = dict(AUTO_MAP)
    model.config.architectures = ["MPTForCausalLM"]
    with atomic_directory(output_path) as staging:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        _copy_model_code(staging)
    return Path(output_path)


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
        output_precision: ``fp32``, ``fp16`` or ``bf16``.
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
