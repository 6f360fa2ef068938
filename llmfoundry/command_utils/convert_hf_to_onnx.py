"""Export a Hugging Face causal LM folder to ONNX: ``input_ids, attention_mask -> logits``.

The graph is traced with ``torch.onnx.export(dynamo=True)`` with dynamic batch and sequence
axes (up to ``max_seq_len``), so one file serves any batch of prompts. The output folder holds
``model.onnx`` (``model.onnx.data`` too when the weights are stored outside the graph), the
model's ``config.json`` and the tokenizer. With ``verify_export`` the export is run by
onnxruntime on a padded batch of another shape than the traced one and its logits compared
with PyTorch's. The model runs without a KV cache: generation re-runs the whole sequence
(:func:`onnx_greedy_generate`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from llmfoundry.inference.model_loading import context_length_of
from llmfoundry.models.hf.export import PRECISION_DTYPES
from llmfoundry.utils.config_checks import PositiveInt, check_value
from llmfoundry.utils.exceptions import ConfigError, MissingDependencyError, MissingFileError
from llmfoundry.utils.file_utils import (
    atomic_directory,
    check_replaceable_output,
    looks_like_local_path,
)
from llmfoundry.utils.tokenizer_utils import build_tokenizer

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx",)
ONNX_FILE = "model.onnx"
# Largest |logit difference| accepted between onnxruntime and PyTorch, by export dtype.
TOLERANCES = {"fp32": 1e-3, "fp16": 5e-2, "bf16": 2e-1}
# The traced sequence length: any size except 0/1 (which the tracer would specialize on).
SAMPLE_SEQ_LEN = 16


@dataclasses.dataclass
class OnnxExport:
    """Where the export went and how close onnxruntime came to PyTorch (None: not verified)."""

    folder: Path
    onnx_path: Path
    max_abs_diff: float | None


class LogitsOnly(torch.nn.Module):
    """``(input_ids, attention_mask) -> logits`` of a causal LM, without a KV cache."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The logits of every position."""
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return outputs.logits


def context_length(model: PreTrainedModel) -> int:
    """The model's longest input (``model_loading.context_length_of``).

    Raises:
        ConfigError: if its config names none.
    """
    length = context_length_of(model)
    if length is None:
        raise ConfigError(
            f"{type(model.config).__name__} names no context length (max_seq_len / "
            "max_position_embeddings); pass --max_seq_len"
        )
    return length


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise MissingDependencyError(
            "checking the ONNX export needs onnxruntime: pip install 'llm-foundry[onnx]' "
            "(or pass --no-verify_export)"
        ) from err
    return onnxruntime


def _padded_batch(
    batch_size: int, seq_len: int, vocab_size: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids with left padding of different lengths on every row but the last."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    mask = torch.ones_like(ids)
    for row in range(batch_size - 1):
        mask[row, : min(row + 1, seq_len - 1)] = 0
    return ids, mask


def run_onnx(session: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> np.ndarray:
    """Logits from an onnxruntime session of an export."""
    feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
    return cast(np.ndarray, session.run(["logits"], feeds)[0])


def verify_onnx(
    onnx_path: Path, wrapper: LogitsOnly, batch_size: int, seq_len: int, vocab_size: int
) -> float:
    """The largest |logit difference| between onnxruntime and PyTorch on a padded batch."""
    onnxruntime = _import_onnxruntime()
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ids, mask = _padded_batch(batch_size, seq_len, vocab_size, seed=1)
    with torch.no_grad():
        expected = wrapper(ids, mask).float().numpy()
    got = run_onnx(session, ids, mask).astype(np.float32)
    # Only real tokens' logits matter (a pad position's output is never used).
    real = mask.numpy().astype(bool)
    return float(np.abs(got - expected)[real].max())


def _check_settings(
    name: str, dtype: str, export_format: str, export_batch_size: int, max_seq_len: int | None
) -> None:
    """Raises ConfigError for a bad dtype, format, batch size or length, MissingFileError for a
    local model folder that does not exist."""
    if dtype not in PRECISION_DTYPES:
        raise ConfigError(f"--dtype={dtype!r}: choose one of {', '.join(PRECISION_DTYPES)}")
    if export_format not in EXPORT_FORMATS:
        raise ConfigError(
            f"--export_format={export_format!r}: choose one of {', '.join(EXPORT_FORMATS)}"
        )
    check_value(export_batch_size, PositiveInt, "--export_batch_size")
    if max_seq_len is not None and max_seq_len < 2:  # before: 0 meant the model's context
        raise ConfigError(f"--max_seq_len must be at least 2, got {max_seq_len}")
    if looks_like_local_path(name) and not Path(name).expanduser().exists():
        raise MissingFileError(f"model folder '{name}' does not exist")


def load_for_export(
    name: str,
    dtype: str,
    trust_remote_code: bool,
    from_pretrained_kwargs: Mapping[str, Any] | None,
    revision: str | None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model (eval mode, in ``dtype``) and tokenizer, both at hub ``revision``.

    Raises:
        MissingFileError: if the model cannot be found (a local folder, a hub name or revision).
    """
    kwargs = dict(from_pretrained_kwargs or {})
    if revision is not None:
        kwargs["revision"] = revision
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, trust_remote_code=trust_remote_code, dtype=PRECISION_DTYPES[dtype], **kwargs
        ).eval()
    except OSError as err:  # a missing revision or file: the Hub client's message says which
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = f" at revision {revision!r}" if revision is not None else ""
        raise MissingFileError(f"'{name}'{where} could not be loaded: {first}") from err
    tokenizer = build_tokenizer(name, {**kwargs, "trust_remote_code": trust_remote_code})
    return model, tokenizer


def _write_export_info(
    folder: Path,
    source: str,
    revision: str | None,
    dtype: str,
    max_seq_len: int,
    opset_version: int,
) -> None:
    """``onnx_export.json``: where the export came from and what its graph takes."""
    info = {
        "source": source,
        "revision": revision,
        "dtype": dtype,
        "max_seq_len": max_seq_len,
        "opset_version": opset_version,
        "inputs": ["input_ids", "attention_mask"],
        "outputs": ["logits"],
    }
    (folder / "onnx_export.json").write_text(json.dumps(info, indent=2) + "\n")


def convert_hf_to_onnx(
    pretrained_model_name_or_path: str,
    output_folder: str,
    export_batch_size: int = 8,
    max_seq_len: int | None = None,
    dtype: str = "fp32",
    export_format: str = "onnx",
    trust_remote_code: bool = False,
    from_pretrained_kwargs: Mapping[str, Any] | None = None,
    verify_export: bool = True,
    opset_version: int = 18,
    revision: str | None = None,
) -> OnnxExport:
    """Export a causal LM folder (or hub name) to ONNX, and check it with onnxruntime.

    Args:
        pretrained_model_name_or_path: an HF model folder (our MPT export included) or hub name.
        output_folder: the folder to write (it appears only when the export succeeded; an
            earlier export there is replaced, another non-empty folder is refused).
        export_batch_size: the batch size traced (the batch axis stays dynamic).
        max_seq_len: the longest sequence the export accepts (default: the model's context).
        dtype: ``fp32``, ``fp16`` or ``bf16`` weights and activations.
        export_format: ``onnx``.
        trust_remote_code: allow the folder's own model code (needed for MPT exports).
        from_pretrained_kwargs: more ``from_pretrained`` keyword arguments (for the model and
            the tokenizer).
        verify_export: compare onnxruntime's logits with PyTorch's on another shape.
        opset_version: the ONNX opset.
        revision: the hub revision (branch, tag or commit) of the model and tokenizer.

    Returns:
        The folder, the ``.onnx`` path and the largest logit difference found.

    Raises:
        ConfigError: on an unknown dtype or format, bad sizes, a model that does not export,
            or an export whose logits differ from PyTorch's beyond the dtype's tolerance.
        MissingFileError: if a local model folder does not exist.
    """
    _check_settings(
        pretrained_model_name_or_path, dtype, export_format, export_batch_size, max_seq_len
    )
    check_replaceable_output(output_folder, "--output_folder", (ONNX_FILE,))
    model, tokenizer = load_for_export(
        pretrained_model_name_or_path, dtype, trust_remote_code, from_pretrained_kwargs, revision
    )
    limit = context_length(model) if max_seq_len is None else max_seq_len
    wrapper = LogitsOnly(model)
    sample_len = min(SAMPLE_SEQ_LEN, limit)
    # A traced size of 1 would be specialized into the graph: trace at least 2 rows.
    sample_ids, sample_mask = _padded_batch(
        max(export_batch_size, 2), sample_len, int(model.config.vocab_size)
    )
    batch = torch.export.Dim("batch", min=1)
    sequence = torch.export.Dim("sequence", min=1, max=limit)
    with atomic_directory(output_folder) as staging:
        onnx_path = staging / ONNX_FILE
        logger.info("exporting %s to ONNX (opset %d)", pretrained_model_name_or_path, opset_version)
        try:
            with torch.no_grad():
                torch.onnx.export(
                    wrapper,
                    (sample_ids, sample_mask),
                    str(onnx_path),
                    input_names=["input_ids", "attention_mask"],
                    output_names=["logits"],
                    dynamic_shapes={
                        "input_ids": {0: batch, 1: sequence},
                        "attention_mask": {0: batch, 1: sequence},
                    },
                    opset_version=opset_version,
                    dynamo=True,
                    external_data=False,
                )
        except Exception as err:  # the exporter raises many kinds; name the model and cause
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"'{pretrained_model_name_or_path}' could not be exported to ONNX: {first}"
            ) from err
        model.config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _write_export_info(
            staging, pretrained_model_name_or_path, revision, dtype, limit, opset_version
        )
        max_abs_diff = None
        if verify_export:
            # Another shape than the traced one, with padding: the axes really are dynamic.
            check_len = min(limit, sample_len + 5)
            max_abs_diff = verify_onnx(
                onnx_path, wrapper, 3, check_len, int(model.config.vocab_size)
            )
            logger.info("onnxruntime vs PyTorch: max |logit difference| %.3g", max_abs_diff)
            if not max_abs_diff <= TOLERANCES[dtype]:
                raise ConfigError(
                    f"the ONNX export of '{pretrained_model_name_or_path}' disagrees with "
                    f"PyTorch: max |logit difference| {max_abs_diff:.3g} > {TOLERANCES[dtype]} "
                    f"({dtype}); nothing was written"
                )
    folder = Path(output_folder)
    return OnnxExport(folder, folder / ONNX_FILE, max_abs_diff)


def onnx_greedy_generate(
    onnx_path: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    max_new_tokens: int,
) -> str:
    """Greedy continuation of ``prompt`` by an ONNX export (whole sequence re-run per token).

    Stops at the tokenizer's EOS token.
    """
    onnxruntime = _import_onnxruntime()
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ids = list(tokenizer(prompt)["input_ids"])
    new: list[int] = []
    for _ in range(max_new_tokens):
        tensor = torch.tensor([ids + new])
        logits = run_onnx(session, tensor, torch.ones_like(tensor))
        token = int(logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
    return str(tokenizer.decode(new, skip_special_tokens=True))
