"""Reading a Composer checkpoint for the export: fetching it (local, remote file or sharded
folder) and picking out the model's class, configs, tokenizer and weights.

Composer records the model's class and config, the adapter config and the tokenizer files under
``state.integrations.huggingface``; the weights are under ``state.model`` with a ``model.``
prefix.
"""

from __future__ import annotations

import json
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from composer.utils import get_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError
from llmfoundry.utils.object_store import RemoteFolder, is_remote, user_errors

MODEL_PREFIX = "model."
# Module names that wrappers insert into parameter names (activation checkpointing,
# torch.compile); the Hugging Face model knows its weights without them.
WRAPPER_NAMES = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")
# FSDP2's fully_shard swaps a module's class for a subclass named FSDP<name>.
FSDP_CLASS_PREFIX = "FSDP"
# Checkpoint file names Composer writes (a remote path ending otherwise is taken as a folder).
CHECKPOINT_FILE_SUFFIXES = (".pt", ".pt.tar", ".tar", ".pt.gz", ".pt.lz4", ".pt.zst")


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
