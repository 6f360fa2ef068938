"""Values that several layers share, each defined once here (torch-free, so that the CLI's flag
declarations and the converters can read them without loading torch)."""

from __future__ import annotations

from typing import Literal, get_args

IGNORE_INDEX = -100
"""The label value that the cross-entropy loss skips (PyTorch's default ``ignore_index``)."""

DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
"""The short precision names the commands take (``--model_dtype``, ``--output_precision``,
``--dtype``), each with the ``torch`` dtype it names (the long names LLM Foundry YAMLs use)."""
PrecisionName = Literal["float32", "float16", "bfloat16", "fp32", "fp16", "bf16"]
"""A weights dtype by either name (an annotation the config check reads: ``hf_checkpointer``'s
``precision``); the same names as :data:`DTYPE_NAMES`' values and keys."""

AUTOCAST_DTYPE_NAMES = ("fp16", "bf16")
"""The precisions ``torch.autocast`` can run generation in."""

HF_ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flex_attention")
"""transformers' ``attn_implementation`` names."""

YAML_SUFFIXES = (".yaml", ".yml")
"""The suffixes of a run config that a command line names (``llmfoundry eval my.yaml``)."""

InitDevice = Literal["cpu", "meta", "mixed"]
"""Where a model is first built: ``meta`` and ``mixed`` build on the meta device."""
INIT_DEVICES = get_args(InitDevice)
