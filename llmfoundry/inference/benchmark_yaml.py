"""LLM Foundry's YAML form of the inference benchmark: ``benchmark.py yamls/1b.yaml [key=value ...]``.

The YAML builds a ``model:`` section with random weights (``init_device``, ``attn_config`` and
the rest as a training YAML has them) and its ``tokenizer:``, casts the model to
``model_dtype`` on ``device`` (null: CUDA when there is one, else the CPU), and times
``generate`` over ``batch_sizes`` x ``input_lengths`` x ``output_lengths``:
``num_warmup_batches`` untimed and ``num_batches`` timed runs each. Results go where the flag form
writes them (``output_dir``: ``results.csv`` and the plot). As in LLM Foundry, top-level
variables (``max_seq_len``, ``tokenizer_name``) may be interpolated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import PreTrainedModel

from llmfoundry.utils.config_checks import NonNegativeInt, PositiveInt
from llmfoundry.utils.config_utils import load_config
from llmfoundry.utils.exceptions import ConfigError


@dataclass
class BenchmarkYaml:
    """The keys of a benchmark YAML (LLM Foundry's ``scripts/inference/benchmarking/yamls``)."""

    model: dict[str, Any]
    tokenizer: dict[str, Any]
    batch_sizes: list[PositiveInt]
    input_lengths: list[PositiveInt]
    output_lengths: list[PositiveInt]
    num_batches: PositiveInt = 5
    num_warmup_batches: NonNegativeInt = 3
    benchmark_name: str = "benchmark"
    device: str | None = None
    model_dtype: str = "fp32"
    autocast_dtype: str | None = None
    use_cache: bool = True
    use_deepspeed: bool = False
    output_dir: str = "inference_benchmark"
    seed: int = 42
    variables: dict[str, Any] = dataclasses.field(default_factory=dict)


def load_benchmark_yaml(yaml_path: str | Path, overrides: Sequence[str] = ()) -> BenchmarkYaml:
    """Read, resolve and check a benchmark YAML.

    Raises:
        MissingFileError, ConfigError: on a missing file, a bad key or value, or a setting this
            benchmark does not run (``use_deepspeed: true``, ``use_cache: false``).
    """
    config, _ = load_config(yaml_path, overrides, BenchmarkYaml)
    if config.use_deepspeed:
        raise ConfigError("use_deepspeed: true is not supported; set it to false")
    if not config.use_cache:
        raise ConfigError("use_cache: false is not supported; generate here always uses the cache")
    return config


def build_benchmark_model(config: BenchmarkYaml) -> tuple[PreTrainedModel, Any]:
    """The YAML's model (random weights, in ``model_dtype`` on ``device``, eval mode) and
    tokenizer.

    Raises:
        ConfigError, TokenizerError: on a bad section or an unloadable tokenizer.
    """
    from llmfoundry.inference.model_loading import check_device, default_device
    from llmfoundry.models.hf.export import dtype_of_precision
    from llmfoundry.utils.builders import (
        build_composer_model_from_section,
        build_tokenizer_from_section,
    )

    dtype = dtype_of_precision(config.model_dtype, "model_dtype")
    check_device(config.device)
    device = config.device or default_device()
    tokenizer = build_tokenizer_from_section(config.tokenizer)
    composer_model = build_composer_model_from_section(config.model, tokenizer)
    module = cast(torch.nn.Module, cast(Any, composer_model).model)
    module.to(device=device, dtype=dtype).eval()
    return cast(PreTrainedModel, module), tokenizer
