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

import json
import logging
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import peft
import torch
import transformers
from composer.utils import get_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from llmfoundry.models.hf.export import (
    AUTO_MAP,
    OUTPUT_DTYPES,
    build_with_weights,
    dtype_of_precision,
    save_mpt_as_hf,
    save_tokenizer,
    write_mpt_folder,
)
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.utils.checkpoint_utils import load_composer_checkpoint, weights_mismatch_error
from llmfoundry.utils.exceptions import (
    ConfigError,
    DatasetError,
    MissingFileError,
    UserError,
    first_line,
)
from llmfoundry.utils.file_utils import (
    HF_FOLDER_MARKERS,
    atomic_directory,
    check_replaceable_output,
)
from llmfoundry.utils.object_store import RemoteFolder, is_remote, user_errors

logger = logging.getLogger(__name__)

# The export helpers live in ``llmfoundry.models.hf.export`` (callbacks use them too); these
# names stay importable from here.
__all__ = [
    "AUTO_MAP",
    "OUTPUT_DTYPES",
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

MODEL_PREFIX = "model."
# Module names that wrappers insert into parameter names (activation checkpointing,
# torch.compile); the Hugging Face model knows its weights without them.
WRAPPER_NAMES = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")
# FSDP2's fully_shard swaps a module's class for a subclass named FSDP<name>.
FSDP_CLASS_PREFIX = "FSDP"
# Checkpoint file names Composer writes (a remote path ending otherwise is taken as a folder).
CHECKPOINT_FILE_SUFFIXES = (".pt", ".pt.tar", ".tar", ".pt.gz", ".pt.lz4", ".pt.zst")
TEST_PROMPT = "Hello"


# --- what the checkpoint holds ------------------------------------------------------------


def _huggingface_metadata(state: dict[str, Any], path: str) -> dict[str, Any]:
    try:
        metadata = state["state"]["integrations"]["huggingface"]
        metadata["model"]["config"]["content"]
    except (KeyError, TypeError) as err:
        raise DatasetError(
            f"'{path}' has no Hugging Face metadata (state.integrations.huggingface); "
            "it was not saved from a Hugging Face-based Composer model (mpt_causal_lm or "
            "hf_causal_lm), so there is nothing to convert"
        ) from err
    return metadata


def _recorded_class_name(metadata: dict[str, Any]) -> str:
    """The short class name of the saved model, with FSDP2's ``FSDP`` class prefix removed."""
    qualified = str(metadata["model"]["config"].get("class", ""))
    module, _, name = qualified.rpartition(".")
    if name.startswith(FSDP_CLASS_PREFIX) and "fsdp" in module:
        name = name[len(FSDP_CLASS_PREFIX) :]
    return name


def _is_mpt(class_name: str, config: dict[str, Any]) -> bool:
    """Our MPT: its class (Composer's or a remote-code copy), or a LoRA-wrapped one's architecture.

    transformers' own MPT is ``MptForCausalLM`` and converts like any native model.
    """
    architectures = config.get("architectures") or []
    return class_name.endswith("MPTForCausalLM") or (
        class_name.startswith("Peft") and "MPTForCausalLM" in architectures
    )


def _strip_wrapper_names(name: str) -> str:
    for wrapper in WRAPPER_NAMES:
        name = name.replace(wrapper, "")
    return name


@dataclass
class CheckpointContents:
    """What an export needs from a Composer checkpoint.

    Attributes:
        source: the checkpoint path as the user gave it (for messages).
        class_name: the saved model's class (``LlamaForCausalLM``, ``PeftModelForCausalLM``...).
        config: the model's ``config.json`` content.
        peft_config: the adapter's ``adapter_config.json`` content, for a LoRA model.
        tokenizer: the tokenizer saved with the model, if any.
        weights: the model's weights, named as in the Hugging Face (or peft) model.
    """

    source: str
    class_name: str
    config: dict[str, Any]
    peft_config: dict[str, Any] | None
    tokenizer: PreTrainedTokenizerBase | None
    weights: dict[str, torch.Tensor]

    @property
    def is_mpt(self) -> bool:
        """Whether the model (or a LoRA adapter's base) is our MPT."""
        return _is_mpt(self.class_name, self.config)

    @property
    def holds_base_weights(self) -> bool:
        """For a LoRA model, whether the frozen base weights were saved too (not adapter-only)."""
        return any("lora_" not in name for name in self.weights)


def read_checkpoint_contents(
    state: dict[str, Any], path: str, trust_remote_code: bool = False
) -> CheckpointContents:
    """Pick the model's class, configs, tokenizer and weights out of a loaded checkpoint.

    Args:
        state: what :func:`load_composer_checkpoint` returned.
        path: the checkpoint's path, for messages.
        trust_remote_code: allow a tokenizer that ships its own code.

    Raises:
        DatasetError: if the checkpoint has no Hugging Face metadata or no model weights.
    """
    metadata = _huggingface_metadata(state, path)
    model_meta = metadata["model"]
    peft_meta = model_meta.get("peft_config")
    weights = {
        _strip_wrapper_names(name[len(MODEL_PREFIX) :]): tensor
        for name, tensor in (state["state"].get("model") or {}).items()
        if name.startswith(MODEL_PREFIX) and isinstance(tensor, torch.Tensor)
    }
    if not weights:
        raise DatasetError(f"'{path}' holds no model weights (state.model is empty)")
    return CheckpointContents(
        source=path,
        class_name=_recorded_class_name(metadata),
        config=dict(model_meta["config"]["content"]),
        peft_config=dict(peft_meta["content"]) if peft_meta else None,
        tokenizer=tokenizer_from_checkpoint(state, path, trust_remote_code),
        weights=weights,
    )


def mpt_config_from_checkpoint(state: dict[str, Any], path: str) -> MPTConfig:
    """The ``MPTConfig`` stored in a Composer checkpoint's Hugging Face metadata.

    Raises:
        ConfigError: if the checkpoint holds a model other than MPT.
    """
    metadata = _huggingface_metadata(state, path)
    class_name = _recorded_class_name(metadata)
    content = dict(metadata["model"]["config"]["content"])
    if not _is_mpt(class_name, content):
        raise ConfigError(f"'{path}' holds a {class_name or 'unknown'} model, not an MPT")
    config = MPTConfig.from_dict(content)
    assert isinstance(config, MPTConfig)
    return config


def tokenizer_from_checkpoint(
    state: dict[str, Any], path: str, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase | None:
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
        return AutoTokenizer.from_pretrained(tmp, trust_remote_code=trust_remote_code)


def mpt_model_from_checkpoint(state: dict[str, Any], config: MPTConfig) -> MPTForCausalLM:
    """Build an ``MPTForCausalLM`` holding the checkpoint's weights (no random init on the way).

    Raises:
        DatasetError: if the weights do not match the config.
    """
    weights = {
        _strip_wrapper_names(key[len(MODEL_PREFIX) :]): value
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


def _write_full_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, folder: Path
) -> None:
    if isinstance(model, MPTForCausalLM):
        write_mpt_folder(model, tokenizer, folder)
        return
    model.save_pretrained(folder)
    if tokenizer is not None:
        save_tokenizer(tokenizer, folder)


def _build_full_model(contents: CheckpointContents, dtype: torch.dtype) -> PreTrainedModel:
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
    if (
        not is_remote(name)
        and name.startswith(("/", ".", "~"))
        and not Path(name).expanduser().is_dir()
    ):
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


def _write_lora(
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
    _write_full_model(merged, contents.tokenizer, folder)


# --- fetching, uploading, checking ----------------------------------------------------------


def fetch_checkpoint(composer_path: str, local_location: str | None, scratch: Path) -> Path:
    """The local path of the checkpoint, downloading a remote one (file or sharded folder).

    Args:
        composer_path: a local path or an object-store URI (``s3://bucket/run/ep1-ba100-rank0.pt``
            or a sharded checkpoint's folder ``s3://bucket/run/ep1-ba100``).
        local_location: where to keep the download (a file, or a folder for a sharded one).
        scratch: a temporary folder for the download when ``local_location`` is None.

    Raises:
        MissingFileError: if the remote checkpoint does not exist.
        ConfigError, MissingDependencyError: if the object store cannot be reached.
    """
    if not is_remote(composer_path):
        return Path(composer_path).expanduser()
    name = Path(urllib.parse.urlparse(composer_path).path.rstrip("/")).name
    if composer_path.endswith(CHECKPOINT_FILE_SUFFIXES):
        local = Path(local_location) if local_location else scratch / name
        local.parent.mkdir(parents=True, exist_ok=True)
        with user_errors("--composer_path", composer_path, "download it"):
            try:
                get_file(composer_path, str(local), overwrite=True)
            except FileNotFoundError as err:
                raise MissingFileError(
                    f"checkpoint '{composer_path}' does not exist; pass the .pt file Composer saved"
                ) from err
        return local
    local = Path(local_location) if local_location else scratch / (name or "checkpoint")
    remote = RemoteFolder(composer_path, "--composer_path", local)
    files = remote.list_files()
    if not files:
        raise MissingFileError(
            f"checkpoint '{composer_path}' does not exist (no objects under it); pass the .pt "
            "file or the sharded checkpoint folder Composer saved"
        )
    for relative in files:
        (local / relative).parent.mkdir(parents=True, exist_ok=True)
        remote.download(relative, local / relative)
    return local


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
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
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
            _write_lora(contents, staging, dtype, merge_lora, base_model, trust_remote_code)
        else:
            _write_full_model(_build_full_model(contents, dtype), contents.tokenizer, staging)
    kind = "LoRA adapter" if is_adapter else f"{contents.class_name} model"
    logger.info("wrote the %s (%s) to %s", kind, output_precision, output)

    if hf_repo_for_upload:
        upload_folder_to_hub(output, hf_repo_for_upload)
        if test_uploaded_model:
            check_model_generates(hf_repo_for_upload, is_adapter, trust_remote_code)
    return output
