"""The top level of a run config: :class:`TrainConfig` and :class:`EvalConfig`, LLM Foundry's
keys with their types and defaults. ``llmfoundry.utils.config_utils`` loads a YAML into them
(through :func:`llmfoundry.utils.config_checks.check_value`); a new top-level key is a field
here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal

from llmfoundry.utils.config_checks import (
    POSITIVE,
    TIME,
    AllOrCount,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Seed,
)

__all__ = ["EvalConfig", "TrainConfig", "path_anchors"]


@dataclasses.dataclass
class TrainConfig:
    """The top level of a training run config, with LLM Foundry's keys and defaults.

    Component sections (``model``, ``tokenizer``, ``optimizer``, ``scheduler``, loaders) are
    ``{name: ..., **kwargs}`` mappings validated by their builders; mappings of components
    (``callbacks``, ``loggers``, ``algorithms``) are ``{registry_name: kwargs}``.
    ``global_train_batch_size`` or ``device_train_batch_size`` sets the batch (the global one
    is split over the processes, so the same YAML does the same optimisation on any number).
    """

    model: dict[str, Any]
    tokenizer: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    train_loader: dict[str, Any]
    max_duration: Annotated[int | str, TIME]
    max_seq_len: Annotated[int, POSITIVE]
    global_train_batch_size: Annotated[int | None, POSITIVE] = None
    device_train_batch_size: Annotated[int | None, POSITIVE] = None
    seed: Seed = 17
    precision: str = "amp_bf16"
    code_paths: list[str] | None = None
    # CUDA allocator and loading knobs, applied before CUDA starts.
    max_split_size_mb: PositiveInt | None = None
    expandable_segments: bool = True  # LLM Foundry's default too
    cuda_load_lazy: bool = False
    # Distributed training.
    dist_timeout: PositiveFloat = 600.0
    fsdp_config: dict[str, Any] | None = None
    tp_config: dict[str, Any] | None = None
    # Evaluation.
    eval_loader: dict[str, Any] | list[dict[str, Any]] | None = None
    eval_loaders: list[dict[str, Any]] | None = None
    icl_tasks: list[dict[str, Any]] | str | None = None
    icl_tasks_str: str | None = None
    eval_gauntlet: dict[str, Any] | str | None = None
    eval_gauntlet_str: str | None = None
    icl_subset_num_batches: PositiveInt | None = None
    icl_seq_len: PositiveInt | None = None
    # Run code_evaluation icl_tasks (model-written code, in a sandboxed subprocess).
    allow_code_eval: bool = False
    eval_interval: Annotated[int | str, TIME] = 1
    eval_first: bool = False
    eval_subset_num_batches: AllOrCount = -1
    device_eval_batch_size: Annotated[int | None, POSITIVE] = None
    # Batches.
    device_train_microbatch_size: int | str = "auto"
    accumulate_train_batch_on_tokens: bool = True
    train_subset_num_batches: AllOrCount = -1
    # Composer skips the batches a resumed run already trained on by iterating past them.
    spin_dataloaders: bool = True
    # Set by the update_batch_size_info config transform: the number of processes and the
    # microbatches per device batch ('auto' with an automatic microbatch size).
    n_gpus: int | None = None
    device_train_grad_accum: int | str | None = None
    # Components.
    callbacks: dict[str, Any] | None = None
    loggers: dict[str, Any] | None = None
    algorithms: dict[str, Any] | None = None
    # Logging.
    progress_bar: bool = False
    log_to_console: bool = True
    console_log_interval: Annotated[int | str, TIME] = "1ba"
    python_log_level: str | None = "debug"
    log_config: bool = True
    # Checkpoints.
    save_folder: str | None = None
    save_interval: Annotated[int | str, TIME] = "1000ba"
    save_filename: str | None = None
    save_latest_filename: str | None = None
    save_overwrite: bool = False
    save_weights_only: bool = False
    # -1 keeps every checkpoint locally, 0 removes each once uploaded.
    save_num_checkpoints_to_keep: Literal[-1] | NonNegativeInt = -1
    save_ignore_keys: list[str] | None = None
    load_path: str | None = None
    load_weights_only: bool = False
    load_strict_model_weights: bool = True
    load_ignore_keys: list[str] | None = None
    only_hf_checkpoint: bool = False
    only_composer_checkpoint: bool = False
    autoresume: bool = False
    run_name: str | None = None
    # Compilation and profiling.
    compile_config: dict[str, Any] | None = None
    profiler: dict[str, Any] | None = None
    # Bookkeeping.
    metadata: dict[str, Any] | None = None
    flatten_metadata: bool = True
    variables: dict[str, Any] | None = None
    # Not a YAML key: the folder of the YAML the config came from (set by ``load_config``);
    # relative ``icl_tasks`` / ``eval_gauntlet`` / ``dataset_uri`` paths may be relative to it.
    config_dir: str | None = dataclasses.field(default=None, init=False, repr=False)


@dataclasses.dataclass
class EvalConfig:
    """The top level of an evaluation config (``scripts/eval/eval.py``), with LLM Foundry's keys.

    ``models`` is a list of ``{model_name, model, tokenizer, load_path}`` entries, each
    evaluated on every ``icl_tasks`` task and ``eval_loader(s)`` loader; one model may instead
    be given at the top level (``model``, ``tokenizer``, ``load_path``, ``model_name``), as in
    a training YAML. ``results_folder`` (ours) is where the result tables are written as CSV
    and JSON (``{run_name}`` is filled in; null writes no files).
    """

    max_seq_len: Annotated[int, POSITIVE]
    device_eval_batch_size: PositiveInt
    models: list[dict[str, Any]] | None = None
    model: dict[str, Any] | None = None
    tokenizer: dict[str, Any] | None = None
    load_path: str | None = None
    model_name: str | None = None
    code_paths: list[str] | None = None
    # What to evaluate on.
    icl_tasks: list[dict[str, Any]] | str | None = None
    icl_tasks_str: str | None = None
    icl_subset_num_batches: PositiveInt | None = None
    # Run code_evaluation icl_tasks (model-written code, in a sandboxed subprocess).
    allow_code_eval: bool = False
    eval_gauntlet: dict[str, Any] | str | None = None
    eval_gauntlet_str: str | None = None
    eval_loader: dict[str, Any] | list[dict[str, Any]] | None = None
    eval_loaders: list[dict[str, Any]] | None = None
    eval_subset_num_batches: AllOrCount = -1
    # Run settings.
    seed: Seed = 17
    precision: str = "amp_bf16"
    run_name: str | None = None
    dist_timeout: PositiveFloat = 600.0
    fsdp_config: dict[str, Any] | None = None
    # Components and logging.
    callbacks: dict[str, Any] | None = None
    loggers: dict[str, Any] | None = None
    console_log_interval: Annotated[int | str, TIME] = "1ba"
    python_log_level: str | None = "debug"
    log_config: bool = True
    metadata: dict[str, Any] | None = None
    results_folder: str | None = "eval_results/{run_name}"
    variables: dict[str, Any] | None = None
    # Not a YAML key: the folder of the YAML the config came from (set by ``load_config``);
    # relative ``icl_tasks`` / ``eval_gauntlet`` / ``dataset_uri`` paths may be relative to it.
    config_dir: str | None = dataclasses.field(default=None, init=False, repr=False)


def path_anchors(cfg: TrainConfig | EvalConfig) -> list[Path]:
    """The folder of the YAML ``cfg`` came from, where a relative ``icl_tasks`` /
    ``eval_gauntlet`` / ``dataset_uri`` path is looked up after the working directory (none
    for a config built in Python)."""
    return [Path(cfg.config_dir)] if cfg.config_dir else []
