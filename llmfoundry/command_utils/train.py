"""The training command: a validated ``TrainConfig`` in, a fitted Composer ``Trainer`` out.

Phases, in order: set up the process (logging, seed, distributed), build the tokenizer and
model, build the data, build the optimization pieces, assemble the ``Trainer`` and fit.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from composer import Trainer
from composer.core import Callback
from composer.devices import Device
from composer.loggers import LoggerDestination
from composer.models import ComposerModel
from composer.profiler import JSONTraceHandler, Profiler, TraceHandler, cyclic_schedule
from composer.utils import dist, get_device, reproducibility

from llmfoundry.callbacks.graceful_stop import GracefulStop
from llmfoundry.command_utils import resume
from llmfoundry.command_utils.evaluators import (
    build_gauntlet,
    build_run_evaluators,
    gauntlet_config,
)
from llmfoundry.command_utils.meta_init import sharded_model_build
from llmfoundry.command_utils.parallelism import build_parallelism_config
from llmfoundry.command_utils.preflight import (
    check_profiler_section,
    check_train_config,
    compile_scope,
)
from llmfoundry.command_utils.run_setup import (
    leave_process_group,
    log_run_config,
    run_name_of,
    runtime_precision,
    start_run,
)
from llmfoundry.loggers.run_artifacts import RunArtifactsLogger, build_run_artifacts_logger
from llmfoundry.models.moe_parallel import setup_expert_parallel
from llmfoundry.utils.builders import (
    build_algorithms,
    build_callbacks,
    build_callbacks_with_config,
    build_composer_model_from_section,
    build_dataloader_from_section,
    build_loggers,
    build_optimizer_from_section,
    build_scheduler_from_section,
    build_tokenizer_from_section,
)
from llmfoundry.utils.checkpoint_utils import check_load_path
from llmfoundry.utils.composer_shortcuts import close_trainer, trainer_env_without_cpu_probe
from llmfoundry.utils.config_transforms import batch_size_info
from llmfoundry.utils.config_utils import TrainConfig, config_from_mapping, load_config
from llmfoundry.utils.cpu_malloc import tune_cpu_malloc
from llmfoundry.utils.exceptions import ConfigError, MissingFileError
from llmfoundry.utils.file_utils import check_output_folder
from llmfoundry.utils.object_store import is_remote

logger = logging.getLogger(__name__)


# The top-level keys of a training config (LLM Foundry exports this set by name).
TRAIN_CONFIG_KEYS = frozenset(f.name for f in dataclasses.fields(TrainConfig) if f.init)


@dataclasses.dataclass(frozen=True)
class BatchSizes:
    """Per-device batch sizes derived from the global batch size and the world size."""

    device_train_batch_size: int
    device_train_microbatch_size: int | str
    device_eval_batch_size: int


def compute_batch_sizes(cfg: TrainConfig, world_size: int, device: Device) -> BatchSizes:
    """This process's batch sizes (the arithmetic is ``config_transforms.batch_size_info``).

    A config loaded by ``load_config`` was already split by the ``update_batch_size_info``
    transform for the run's number of processes (``n_gpus``); its ``device_train_batch_size``
    is then derived, so with another ``world_size`` the split is redone from the global batch.
    ``device_train_microbatch_size: auto`` needs a GPU; elsewhere the whole device batch is one
    microbatch.

    Raises:
        ConfigError: if neither batch size is set, they disagree, or they do not divide evenly.
    """
    derived = cfg.n_gpus is not None and cfg.global_train_batch_size is not None
    info = batch_size_info(
        cfg.global_train_batch_size,
        None if derived else cfg.device_train_batch_size,
        cfg.device_train_microbatch_size,
        world_size,
    )
    micro = info.device_train_microbatch_size
    if micro == "auto" and device.name != "gpu":
        # Composer's automatic microbatching searches for the largest batch that fits in GPU memory.
        logger.info(
            "device_train_microbatch_size=auto needs a GPU; using the full device batch (%d)",
            info.device_train_batch_size,
        )
        micro = info.device_train_batch_size
    return BatchSizes(
        device_train_batch_size=info.device_train_batch_size,
        device_train_microbatch_size=micro,
        device_eval_batch_size=cfg.device_eval_batch_size or info.device_train_batch_size,
    )


def apply_cuda_env(cfg: TrainConfig) -> None:
    """Set the CUDA allocator/loading environment from the config, before CUDA starts.

    The config's allocator options are added to the ``PYTORCH_CUDA_ALLOC_CONF`` the process
    was started with (the config's value wins for an option set in both).
    """
    ours: dict[str, str] = {}
    if cfg.max_split_size_mb is not None:
        ours["max_split_size_mb"] = str(cfg.max_split_size_mb)
    if cfg.expandable_segments:
        ours["expandable_segments"] = "True"
    if ours:
        given = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
        options = dict(item.split(":", 1) for item in given.split(",") if ":" in item)
        options.update(ours)
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = ",".join(f"{k}:{v}" for k, v in options.items())
    if cfg.cuda_load_lazy:
        os.environ["CUDA_MODULE_LOADING"] = "LAZY"


def check_run_options(cfg: TrainConfig) -> None:
    """Fail, before anything is built, on checkpoint and resumption options that cannot work.

    Raises:
        ConfigError: on autoresume without run_name or save_folder, contradicting
            only_*_checkpoint flags, only_hf_checkpoint without an hf_checkpointer callback,
            or a save_folder that cannot be created.
        MissingFileError: if a local load_path does not exist.
    """
    if cfg.autoresume:
        if run_name_of(cfg.run_name) is None:
            raise ConfigError(
                "autoresume needs a run_name (or $RUN_NAME): it finds the run's checkpoints by name"
            )
        if cfg.save_folder is None:
            raise ConfigError("autoresume needs save_folder: it resumes from the checkpoints there")
    if cfg.only_hf_checkpoint and cfg.only_composer_checkpoint:
        raise ConfigError("only_hf_checkpoint and only_composer_checkpoint contradict; set one")
    if cfg.only_hf_checkpoint and "hf_checkpointer" not in (cfg.callbacks or {}):
        raise ConfigError(
            "only_hf_checkpoint: true writes no Composer checkpoint, so the model is saved only by "
            "the hf_checkpointer callback; add callbacks.hf_checkpointer (save_folder, "
            "save_interval) or set only_hf_checkpoint: false"
        )
    local_load = cfg.load_path is not None and not is_remote(cfg.load_path)
    if local_load and "{" not in str(cfg.load_path) and not Path(str(cfg.load_path)).exists():
        raise MissingFileError(
            f"load_path '{cfg.load_path}' does not exist; give a checkpoint file or folder"
        )
    if cfg.save_folder is not None:
        check_output_folder(cfg.save_folder, "save_folder")


def build_profiler(section: Mapping[str, Any] | None) -> Profiler | None:
    """Composer's profiler from ``profiler: {schedule: {...}, json_trace_handler: {...}, ...}``.

    The other keys are ``composer.profiler.Profiler``'s keyword arguments.

    Raises:
        ConfigError: if ``schedule`` is missing, or on a key that is not an argument (see
            :func:`~llmfoundry.command_utils.preflight.check_profiler_section`).
    """
    if section is None:
        return None
    check_profiler_section(section)
    options = dict(section)
    schedule_options = dict(options.pop("schedule"))
    json_options = options.pop("json_trace_handler", None)
    handlers: list[TraceHandler] = []
    if json_options is not None:
        handlers.append(JSONTraceHandler(**json_options))
    return Profiler(
        schedule=cyclic_schedule(**schedule_options), trace_handlers=handlers, **options
    )


def with_run_artifacts(
    loggers: list[LoggerDestination], save_folder: str | None
) -> list[LoggerDestination]:
    """``loggers`` plus the run-artefacts destination (metrics.csv/json/png), unless configured.

    The files go to ``<save_folder>/metrics``, or ``{run_name}/metrics`` without a save_folder.
    """
    if any(isinstance(destination, RunArtifactsLogger) for destination in loggers):
        return loggers
    return [*loggers, build_run_artifacts_logger(save_folder)]


def compile_model_or_blocks(
    compile_config: Mapping[str, Any] | None, model: Any
) -> dict[str, Any] | None:
    """The ``compile_config`` for Composer's whole-model compile, after a per-block compile.

    ``compile_config.scope: blocks`` (ours; default ``model``, Composer's behaviour) compiles each
    transformer block in place with the other keys as ``torch.compile`` arguments, and Composer
    compiles nothing more: one graph reused by every layer, compiled in seconds, with the blocks
    still separate FSDP units.
    """
    if compile_config is None:
        return None
    scope, options = compile_scope(compile_config)
    if scope == "model":
        return options
    inner: Any = getattr(model, "model", None)
    if not hasattr(inner, "compile_blocks"):
        raise ConfigError(
            "compile_config.scope: blocks needs an MPT model (mpt_causal_lm); "
            "use scope: model for this one"
        )
    inner.compile_blocks(**options)
    return None


def start_training_process(cfg: TrainConfig) -> tuple[Device, str]:
    """Set up the process for ``cfg``: logging, code paths, every check, CUDA environment, seed,
    device, precision and process group (checks first: nothing is built, written or started
    before every section passed).

    Returns:
        The device and the precision to train with.
    """
    start_run(cfg.python_log_level, cfg.code_paths)
    check_train_config(cfg)
    check_run_options(cfg)
    apply_cuda_env(cfg)
    reproducibility.seed_all(cfg.seed)
    device = get_device(None)
    if device.name == "cpu":
        tune_cpu_malloc()
    precision = runtime_precision(cfg.precision, device)
    dist.initialize_dist(device, timeout=cfg.dist_timeout)
    resume.check_autoresume_checkpoint(
        cfg.autoresume, cfg.save_folder, cfg.save_latest_filename, run_name_of(cfg.run_name)
    )
    return device, precision


def build_train_model(cfg: TrainConfig, device: Device, tokenizer: Any) -> ComposerModel:
    """Build the model (on the meta device first when sharded) and check ``load_path`` against it."""
    with sharded_model_build(cfg.model, cfg.fsdp_config, device.name, dist.get_world_size()):
        model = build_composer_model_from_section(cfg.model, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %s with %.2fM parameters", cfg.model.get("name"), n_params / 1e6)
    if cfg.load_path is not None:  # read safely and checked against the model, in one line
        strict = cfg.load_strict_model_weights and not cfg.load_ignore_keys
        check_load_path(cfg.load_path, model, "load_path", strict=strict)
    return model


def train_callbacks(
    cfg: TrainConfig, logged_config: dict[str, Any] | None, batch_sizes: BatchSizes
) -> list[Callback]:
    """The configured callbacks, the gauntlet's, and the graceful-stop handler."""
    run_config = {
        **(logged_config or dataclasses.asdict(cfg)),
        "device_train_batch_size": batch_sizes.device_train_batch_size,
    }
    return [
        *build_callbacks(cfg.callbacks),
        *build_callbacks_with_config(cfg.callbacks, run_config),
        *build_gauntlet(gauntlet_config(cfg)),
        GracefulStop(),  # SIGTERM: stop at a batch boundary and save (graceful_stop)
    ]


def checkpoint_options(cfg: TrainConfig) -> dict[str, Any]:
    """The ``Trainer``'s save, load and autoresume arguments."""
    return {
        "save_folder": None if cfg.only_hf_checkpoint else cfg.save_folder,
        "save_interval": cfg.save_interval,
        "save_filename": cfg.save_filename or "ep{epoch}-ba{batch}-rank{rank}.pt",
        "save_latest_filename": resume.latest_filename_of(cfg.save_latest_filename),
        "save_overwrite": cfg.save_overwrite,
        "save_weights_only": cfg.save_weights_only,
        "save_num_checkpoints_to_keep": cfg.save_num_checkpoints_to_keep,
        "save_ignore_keys": cfg.save_ignore_keys,
        "load_path": cfg.load_path,
        "load_weights_only": cfg.load_weights_only,
        "load_strict_model_weights": cfg.load_strict_model_weights,
        "load_ignore_keys": cfg.load_ignore_keys,
        "autoresume": cfg.autoresume,
    }


def build_trainer(
    cfg: TrainConfig,
    logged_config: dict[str, Any] | None = None,
    extra_loggers: Sequence[LoggerDestination] = (),
) -> Trainer:
    """Set up the process and assemble a ``Trainer`` for ``cfg`` (without fitting).

    Args:
        cfg: the validated run config.
        logged_config: the resolved config, logged as hyper-parameters when ``log_config``.
        extra_loggers: logger destinations added to the config's (e.g. an in-memory logger).

    Returns:
        The trainer.
    """
    device, precision = start_training_process(cfg)
    batch_sizes = compute_batch_sizes(cfg, dist.get_world_size(), device)
    tokenizer = build_tokenizer_from_section(cfg.tokenizer)
    model = build_train_model(cfg, device, tokenizer)
    parallelism = build_parallelism_config(
        cfg.fsdp_config,
        cfg.tp_config,
        device.name,
        dist.get_world_size(),
        dist.get_local_world_size(),
        model=model,
    )
    ffn_config = cfg.model.get("ffn_config") or {}
    setup_expert_parallel(  # ffn_config.moe_world_size > 1: experts split over ranks
        model,
        int(ffn_config.get("moe_world_size", 1)),
        ffn_config.get("device_mesh"),
        parallelism,
        precision,
        device.name,
    )
    train_loader = build_dataloader_from_section(
        "train_loader", cfg.train_loader, tokenizer, batch_sizes.device_train_batch_size
    )
    evaluators = build_run_evaluators(cfg, tokenizer, model, batch_sizes.device_eval_batch_size)
    with trainer_env_without_cpu_probe():
        trainer = Trainer(
            run_name=run_name_of(cfg.run_name),
            model=model,
            train_dataloader=train_loader,
            train_subset_num_batches=cfg.train_subset_num_batches,
            spin_dataloaders=cfg.spin_dataloaders,
            eval_dataloader=evaluators or None,
            eval_interval=cfg.eval_interval,
            eval_subset_num_batches=cfg.eval_subset_num_batches,
            optimizers=build_optimizer_from_section(cfg.optimizer, model.parameters()),
            schedulers=build_scheduler_from_section(cfg.scheduler),
            max_duration=cfg.max_duration,
            device=device,
            precision=precision,
            device_train_microbatch_size=batch_sizes.device_train_microbatch_size,
            callbacks=train_callbacks(cfg, logged_config, batch_sizes),
            loggers=[
                *with_run_artifacts(build_loggers(cfg.loggers), cfg.save_folder),
                *extra_loggers,
            ],
            algorithms=build_algorithms(cfg.algorithms),
            progress_bar=cfg.progress_bar,
            log_to_console=cfg.log_to_console,
            console_log_interval=cfg.console_log_interval,
            parallelism_config=parallelism,
            accumulate_train_batch_on_tokens=cfg.accumulate_train_batch_on_tokens,
            compile_config=compile_model_or_blocks(cfg.compile_config, model),
            profiler=build_profiler(cfg.profiler),
            seed=cfg.seed,
            dist_timeout=cfg.dist_timeout,
            **checkpoint_options(cfg),
        )
    log_run_config(
        trainer,
        logged_config if cfg.log_config else None,
        cfg.metadata,
        flat_metadata=cfg.flatten_metadata,
    )
    return trainer


def train(
    cfg: TrainConfig | Mapping[str, Any],
    logged_config: dict[str, Any] | None = None,
    extra_loggers: Sequence[LoggerDestination] = (),
) -> Trainer:
    """Build the trainer for ``cfg``, fit it, and return it.

    ``cfg`` may also be the unresolved run config itself (a dict or an OmegaConf
    ``DictConfig``, as LLM Foundry's ``train(cfg)`` takes it): it is resolved and validated
    as a YAML would be.

    With a ``save_folder``, a final checkpoint is written even when ``max_duration`` is not a
    multiple of ``save_interval`` (Composer saves at the end of training).
    """
    if not isinstance(cfg, TrainConfig):
        cfg, logged_config = config_from_mapping(cfg, TrainConfig)
    trainer = build_trainer(cfg, logged_config, extra_loggers)
    if cfg.autoresume and resume.run_is_complete(
        trainer, cfg.save_folder, cfg.save_latest_filename
    ):
        return trainer  # a finished run rerun (a rescheduled job): nothing to train
    if cfg.eval_first and trainer.state.timestamp.batch.value == 0:
        logger.info("eval_first: evaluating before training")
        trainer.eval()
    logger.info("training for %s", cfg.max_duration)
    trainer.fit()
    return trainer


def train_from_yaml(yaml_path: str | Path, overrides: Sequence[str] = ()) -> Trainer:
    """Load ``yaml_path`` with dotlist ``overrides`` and train; the entry point of ``train.py``."""
    cfg, resolved = load_config(yaml_path, overrides, TrainConfig)
    trainer = train(cfg, resolved)
    # Leave the process group cleanly so that no rank is torn down mid-collective.
    close_trainer(trainer)
    stopped_unsaved = resume.stop_exit_code(trainer)
    leave_process_group()
    if stopped_unsaved is not None:  # SIGTERM with no save_folder: see callbacks/graceful_stop
        raise SystemExit(stopped_unsaved)
    return trainer
