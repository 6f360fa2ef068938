"""Merge a peft LoRA adapter into its base model: the logic of ``scripts/inference/merge_lora.py``.

The result is a standalone Hugging Face folder (safetensors weights, config, tokenizer, and the
model code a remote-code base ships) that loads with ``AutoModelForCausalLM`` and no peft.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoTokenizer, PreTrainedModel

from llmfoundry.inference.model_loading import (
    ModelSource,
    adapter_tokenizer_source,
    load_model_and_tokenizer,
)
from llmfoundry.models.hf.export import dtype_of_precision
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.file_utils import (
    HF_FOLDER_MARKERS,
    atomic_directory,
    check_replaceable_output,
)

logger = logging.getLogger(__name__)


def _copy_model_code(base: str, folder: Path) -> None:
    """Copy the Python files a local base folder ships (remote-code models need them to load)."""
    base_path = Path(base).expanduser()
    if not base_path.is_dir():
        return
    for source in base_path.glob("*.py"):
        if not (folder / source.name).exists():
            shutil.copy2(source, folder / source.name)


def merge_lora(
    base: str,
    adapter: str,
    output: str | Path,
    output_precision: str = "fp32",
    trust_remote_code: bool = False,
) -> Path:
    """Fold the LoRA adapter into the base weights and save a standalone model folder.

    The merge runs in fp32; the merged weights are then cast to ``output_precision``. The
    tokenizer comes from the adapter folder when it holds one (a finetune may have added
    tokens), else from the base. The folder appears complete or not at all.

    Args:
        base: the base model folder or hub name.
        adapter: the folder peft's ``save_pretrained`` wrote.
        output: the folder to write (an earlier output there is replaced; another non-empty
            folder is refused).
        output_precision: ``fp32``, ``fp16`` or ``bf16``.
        trust_remote_code: run the model code the base ships (our MPT exports need it).

    Returns:
        The output folder.

    Raises:
        ConfigError: for an unknown precision, or an adapter made for another base model.
        MissingFileError: if the base or adapter folder does not exist.
    """
    dtype = dtype_of_precision(output_precision, "--output_precision")
    output = Path(output)
    if output.resolve() in (Path(base).resolve(), Path(adapter).resolve()):
        raise ConfigError(f"--output={str(output)!r} must differ from --base and --adapter")
    check_replaceable_output(output, "--output", HF_FOLDER_MARKERS)
    source = ModelSource(base, trust_remote_code=trust_remote_code, device="cpu", adapter=adapter)
    model, _ = load_model_and_tokenizer(source, flag="--base")
    tokenizer_source = adapter_tokenizer_source(adapter)
    if tokenizer_source is None:
        logger.info("the adapter folder has no tokenizer: saving the base model's")
    # Loaded afresh: the generation tokenizer was switched to left padding.
    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer_source or base, trust_remote_code=trust_remote_code
    )
    merged = cast(PreTrainedModel, cast(Any, model).merge_and_unload())
    torch.nn.Module.to(merged, dtype)
    with atomic_directory(output) as staging:
        merged.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        _copy_model_code(base, staging)
    logger.info("merged %s into %s: %s", adapter, base, output)
    return output
