"""Convert a Composer checkpoint into a Hugging Face folder: the logic of
``scripts/inference/convert_composer_to_hf.py``.

What the checkpoint holds decides what is written:

* an MPT (``mpt_causal_lm``): ``model.safetensors``, ``config.json`` whose ``auto_map`` points
  at the bundled, self-contained MPT sources, and the tokenizer; ``AutoModelForCausalLM`` loads
  it with ``trust_remote_code=True``, or without it once ``llmfoundry`` is imported;
* any other Hugging Face causal LM (``hf_causal_lm``): the standard ``save_pretrained`` folder,
  which loads without remote code for an architecture transformers implements;
* an ``hf_causal_lm`` trained with a LoRA adapter: the adapter folder
  (``adapter_config.json`` + ``adapter_model.safetensors``, for
  ``peft.PeftModel.from_pretrained(base, folder)``), or with ``merge_lora`` a standalone model
  with the adapter folded in. When the checkpoint holds only the adapter (Composer's
  ``should_save_peft_only``), the merge reads the base model from ``base_model`` or from the
  name the adapter config recorded.

The checkpoint may be a ``.pt`` file or the folder a sharded (FSDP) run saves, on local disk or
in an object store. Composer records the model's class and config, the adapter config and the
tokenizer files under ``state.integrations.huggingface``; the weights are under
``state.model`` with a ``model.`` prefix. The output folder appears complete or not at all.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import peft
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmfoundry.command_utils.composer_checkpoint import (
    CheckpointContents,
    fetch_checkpoint,
    mpt_config_from_checkpoint,
    mpt_model_from_checkpoint,
    read_checkpoint_contents,
    tokenizer_from_checkpoint,
)
from llmfoundry.command_utils.hf_folder_writing import (
    build_full_model,
    causal_lm_class,
    hf_config_from_contents,
    write_full_model,
    write_lora,
)
from llmfoundry.models.hf.export import (
    AUTO_MAP,
    PRECISION_DTYPES,
    dtype_of_precision,
    save_mpt_as_hf,
)
from llmfoundry.utils.checkpoint_utils import load_composer_checkpoint
from llmfoundry.utils.exceptions import ConfigError, UserError, first_line
from llmfoundry.utils.file_utils import (
    HF_FOLDER_MARKERS,
    atomic_directory,
    check_replaceable_output,
)
from llmfoundry.utils.tokenizer_utils import pad_token_id_of

logger = logging.getLogger(__name__)

# The checkpoint reading lives in ``composer_checkpoint``, the folder writing in
# ``hf_folder_writing`` and the export helpers in ``llmfoundry.models.hf.export`` (callbacks use
# them too); these names stay importable from here.
__all__ = [
    "AUTO_MAP",
    "PRECISION_DTYPES",
    "CheckpointContents",
    "causal_lm_class",
    "check_model_generates",
    "convert_composer_to_hf",
    "fetch_checkpoint",
    "hf_config_from_contents",
    "mpt_config_from_checkpoint",
    "mpt_model_from_checkpoint",
    "read_checkpoint_contents",
    "save_mpt_as_hf",
    "tokenizer_from_checkpoint",
    "upload_folder_to_hub",
]

TEST_PROMPT = "Hello"


# --- uploading, checking --------------------------------------------------------------------


def upload_folder_to_hub(folder: Path, repo_id: str) -> None:
    """Push ``folder`` to the (private, created if needed) Hugging Face Hub model repo ``repo_id``.

    Raises:
        ConfigError: naming the repo, if the Hub cannot be reached or refuses the upload.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=True, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model")
    except Exception as err:  # the Hub client raises network, HTTP and offline-mode errors
        raise ConfigError(
            f"--hf_repo_for_upload={repo_id!r}: could not upload to the Hugging Face Hub "
            f"({type(err).__name__}: {first_line(err)}); the converted folder is complete at "
            f"'{folder}'; check the network, HF_HUB_OFFLINE and your token (hf auth login or HF_TOKEN)"
        ) from err
    logger.info("uploaded %s to the Hugging Face Hub as %s", folder, repo_id)


def check_model_generates(
    name_or_path: str,
    is_adapter: bool,
    trust_remote_code: bool,
    prompt: str = TEST_PROMPT,
    max_new_tokens: int = 8,
) -> str:
    """Load a converted model (a folder or Hub repo) and greedily continue ``prompt``.

    Args:
        name_or_path: the folder or Hub repo id.
        is_adapter: it holds a LoRA adapter, loaded on the base its config names.
        trust_remote_code: run the model code it ships (an MPT export does not need it).
        prompt: the text to continue.
        max_new_tokens: how many tokens to generate.

    Returns:
        The prompt and its continuation, decoded.

    Raises:
        ConfigError: if it cannot be loaded or run.
    """
    try:
        if is_adapter:
            model: Any = peft.AutoPeftModelForCausalLM.from_pretrained(
                name_or_path, trust_remote_code=trust_remote_code
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(
                name_or_path, trust_remote_code=trust_remote_code
            )
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            output = model.eval().generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_token_id_of(tokenizer),
            )
    except UserError:
        raise
    except (OSError, ValueError, RuntimeError) as err:
        hint = "" if trust_remote_code else "; pass --trust_remote_code if it ships its own code"
        raise ConfigError(
            f"the converted model '{name_or_path}' could not be loaded and run "
            f"({first_line(err)}){hint}"
        ) from err
    text = tokenizer.decode(output[0], skip_special_tokens=True)
    logger.info("%s generates: %r", name_or_path, text)
    return text


# --- the command ----------------------------------------------------------------------------


def convert_composer_to_hf(
    composer_path: str,
    hf_output_path: str,
    output_precision: str = "fp32",
    local_checkpoint_save_location: str | None = None,
    *,
    merge_lora: bool = False,
    base_model: str | None = None,
    trust_remote_code: bool = False,
    hf_repo_for_upload: str | None = None,
    test_uploaded_model: bool = False,
) -> Path:
    """Convert a Composer checkpoint (MPT or any HF causal LM, LoRA included) to a Hugging Face folder.

    Args:
        composer_path: the ``.pt`` checkpoint or a sharded checkpoint's folder (local path or
            object-store URI).
        hf_output_path: the folder to write (an earlier export there is replaced; another
            non-empty folder is refused).
        output_precision: ``fp32``, ``fp16`` or ``bf16`` (or ``float32``/``float16``/``bfloat16``).
        local_checkpoint_save_location: where to keep a downloaded remote checkpoint.
        merge_lora: for a LoRA checkpoint, write the base model with the adapter merged in
            instead of the adapter alone.
        base_model: the LoRA base model's folder or Hub id, for a merge when the checkpoint
            holds only the adapter (default: the name its adapter config recorded).
        trust_remote_code: run code a tokenizer or base model ships, and when loading the
            uploaded model back.
        hf_repo_for_upload: also push the folder to this Hugging Face Hub repo (private).
        test_uploaded_model: after the upload, load the repo back and generate a few tokens.

    Returns:
        The output folder.

    Raises:
        MissingFileError: on a missing checkpoint or LoRA base model.
        DatasetError: if the path is not a usable Composer checkpoint.
        ConfigError: on a bad option, an unsupported model, or a failed upload.
    """
    dtype = dtype_of_precision(output_precision, "--output_precision")
    check_replaceable_output(hf_output_path, "--hf_output_path", HF_FOLDER_MARKERS)
    if test_uploaded_model and not hf_repo_for_upload:
        raise ConfigError("--test_uploaded_model needs --hf_repo_for_upload (the repo to test)")
    with tempfile.TemporaryDirectory() as scratch:
        local = fetch_checkpoint(composer_path, local_checkpoint_save_location, Path(scratch))
        state = load_composer_checkpoint(local)
    contents = read_checkpoint_contents(state, composer_path, trust_remote_code)
    del state
    is_adapter = contents.peft_config is not None and not merge_lora
    if merge_lora and contents.peft_config is None:
        raise ConfigError(
            f"--merge_lora: '{composer_path}' holds a {contents.class_name} model without a LoRA "
            "adapter; leave out --merge_lora"
        )
    if base_model and contents.peft_config is None:
        logger.warning("--base_model is ignored: '%s' holds no LoRA adapter", composer_path)
    if contents.tokenizer is None:
        logger.warning("'%s' holds no tokenizer: the folder will have none", composer_path)

    output = Path(hf_output_path)
    with atomic_directory(output) as staging:
        if contents.peft_config is not None:
            write_lora(contents, staging, dtype, merge_lora, base_model, trust_remote_code)
        else:
            write_full_model(build_full_model(contents, dtype), contents.tokenizer, staging)
    kind = "LoRA adapter" if is_adapter else f"{contents.class_name} model"
    logger.info("wrote the %s (%s) to %s", kind, output_precision, output)

    if hf_repo_for_upload:
        upload_folder_to_hub(output, hf_repo_for_upload)
        if test_uploaded_model:
            check_model_generates(hf_repo_for_upload, is_adapter, trust_remote_code)
    return output


def convert_composer_to_hf_uri(hf_output_path: str, **options: Any) -> str:
    """:func:`convert_composer_to_hf` to a local folder or an object-store prefix
    (``s3://``, ``gs://``, ``oci://``), as LLM Foundry's script takes either: a prefix is checked
    (reachable, empty or an earlier export) before the work, the folder is converted into a
    temporary one, and that replaces the prefix's earlier export. ``options`` are
    :func:`convert_composer_to_hf`'s other arguments.

    Returns:
        Where the folder is: the local path or the URI.

    Raises:
        ConfigError, MissingFileError, DatasetError: as :func:`convert_composer_to_hf`, or for
            a prefix that holds other objects or cannot be written.
    """
    from llmfoundry.utils.object_store import (
        RemoteFolder,
        earlier_output,
        is_remote,
        replace_remote_folder,
    )

    if not is_remote(hf_output_path):
        return str(convert_composer_to_hf(hf_output_path=hf_output_path, **options))
    flag = "--hf_output_path"
    with tempfile.TemporaryDirectory() as scratch:
        earlier_output(RemoteFolder(hf_output_path, flag, scratch), HF_FOLDER_MARKERS)
        local = convert_composer_to_hf(hf_output_path=f"{scratch}/hf", **options)
        replace_remote_folder(local, hf_output_path, flag, HF_FOLDER_MARKERS)
    return hf_output_path
