"""The training command: a validated ``TrainConfig`` in, a fitted Composer ``Trainer`` out.

Phases, in order: set up the process (logging, seed, distributed), build the tokenizer and
model, build the data, build the optimization pieces, assemble the ``Trainer`` and fit.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from composer import Evaluator, Trainer
from composer.core import DataSpec
from composer.devices import Device
from composer.loggers import LoggerDestination
from composer.utils import dist, get_device, reproducibility

from llmfoundry.utils.builders import (
    build_algorithms,
    build_callbacks,
    build_composer_model,
    build_dataloader,
    build_loggers,
    build_optimizer,
    build_scheduler,
    build_tokenizer_from_section,
)
from llmfoundry.utils.config_utils import TrainConfig, load_config
from llmfoundry.utils.exceptions import ConfigError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BatchSizes:
    """Per-device batch sizes derived from the global batch size and the world size."""

    device_train_batch_size: int
    device_train_microbatch_size: int | str
    device_eval_batch_size: int


def setup_logging(python_log_level: str | None) -> None:
    """Send ``llmfoundry`` (and Composer) log records to stderr at the configured level."""
    if python_log_level is None:
        return
    level = python_log_level.upper()
    logging.basicConfig(format="%(asctime)s: pid%(process)d [%(levelname)s] %(name)s: %(message)s")
    for name in ("llmfoundry", "composer"):
        logging.getLogger(name).setLevel(level)


def runtime_precision(precision: str, device: Device) -> str:
    """The precision to train with: as configured, except fp32 on CPU (which has no AMP in Composer)."""
    if device.name == "cpu" and precision != "fp32":
        logger.warning("precision=%s is not available on CPU; training in fp32", precision)
        return "fp32"
    return precision


def compute_batch_sizes(cfg: TrainConfig, world_size: int, device: Device) -> BatchSizes:
    """Split ``global_train_batch_size`` over the processes.

    Raises:
        ConfigError: if the global batch does not divide evenly.
    """
    if cfg.global_train_batch_size % world_size != 0:
        raise ConfigError(
            f"global_train_batch_size={cfg.global_train_batch_size} must be divisible by the number of "
            f"processes ({world_size})"
        )
    per_device = cfg.global_train_batch_size // world_size
    micro = cfg.device_train_microbatch_size
    if isinstance(micro, str) and micro != "auto":
        raise ConfigError(
            f"device_train_microbatch_size must be an integer or 'auto', got {micro!r}"
        )
    if micro == "auto" and device.name != "gpu":
        # Composer's automatic microbatching searches for the largest batch that fits in GPU memory.
        logger.info(
            "device_train_microbatch_size=auto needs a GPU; using the full device batch (%d)",
            per_device,
        )
        micro = per_device
    return BatchSizes(
        device_train_batch_size=per_device,
        device_train_microbatch_size=micro,
        device_eval_batch_size=cfg.device_eval_batch_size or per_device,
    )


def build_evaluators(
    cfg: TrainConfig, tokenizer: Any, model: Any, batch_sizes: BatchSizes
) -> list[Evaluator]:
    """One evaluator for ``eval_loader`` (if set), scored with the model's eval metrics."""
    if cfg.eval_loader is None:
        return []
    loader: DataSpec = build_dataloader(
        "eval_loader", cfg.eval_loader, tokenizer, batch_sizes.device_eval_batch_size
    )
    metric_names = sorted(model.get_metrics(is_train=False).keys())
    return [Evaluator(label="eval", dataloader=loader, metric_names=metric_names)]


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
    setup_logging(cfg.python_log_level)
    reproducibility.seed_all(cfg.seed)
    device = get_device(None)
    dist.initialize_dist(device, timeout=cfg.dist_timeout)
    batch_sizes = compute_batch_sizes(cfg, dist.get_world_size(), device)

    tokenizer = build_tokenizer_from_section(cfg.tokenizer)
    model = build_composer_model(cfg.model, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %s with %.2fM parameters", cfg.model.get("name"), n_params / 1e6)

    train_loader = build_dataloader(
        "train_loader", cfg.train_loader, tokenizer, batch_sizes.device_train_batch_size
    )
    evaluators = build_evaluators(cfg, tokenizer, model, batch_sizes)

    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    scheduler = build_scheduler(cfg.scheduler)
    trainer = Trainer(
        run_name=cfg.run_name or os.environ.get("RUN_NAME"),
        model=model,
        train_dataloader=train_loader,
        train_subset_num_batches=cfg.train_subset_num_batches,
        eval_dataloader=evaluators or None,
        eval_interval=cfg.eval_interval,
        eval_subset_num_batches=cfg.eval_subset_num_batches,
        optimizers=optimizer,
        schedulers=scheduler,
        max_duration=cfg.max_duration,
        device=device,
        precision=runtime_precision(cfg.precision, device),  # type: ignore[arg-type]
        device_train_microbatch_size=batch_sizes.device_train_microbatch_size,
        callbacks=build_callbacks(cfg.callbacks),
        loggers=[*build_loggers(cfg.loggers), *extra_loggers],
        algorithms=build_algorithms(cfg.algorithms),
        progress_bar=cfg.progress_bar,
        log_to_console=cfg.log_to_console,
        console_log_interval=cfg.console_log_interval,
        save_folder=cfg.save_folder,
        save_interval=cfg.save_interval,
        save_filename=cfg.save_filename or "ep{epoch}-ba{batch}-rank{rank}.pt",
        save_latest_filename=cfg.save_latest_filename or "latest-rank{rank}.pt",
        save_overwrite=cfg.save_overwrite,
        save_weights_only=cfg.save_weights_only,
        save_num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
        load_path=cfg.load_path,
        load_weights_only=cfg.load_weights_only,
        load_strict_model_weights=cfg.load_strict_model_weights,
        autoresume=cfg.autoresume,
        seed=cfg.seed,
        dist_timeout=cfg.dist_timeout,
    )
    if cfg.log_config and logged_config is not None:
        trainer.logger.log_hyperparameters(logged_config)
    return trainer


def train(
    cfg: TrainConfig,
    logged_config: dict[str, Any] | None = None,
    extra_loggers: Sequence[LoggerDestination] = (),
) -> Trainer:
    """Build the trainer for ``cfg``, fit it, and return it.

    With a ``save_folder``, a final checkpoint is written even when ``max_duration`` is not a
    multiple of ``save_interval`` (Composer saves at the end of training).
    """
    trainer = build_trainer(cfg, logged_config, extra_loggers)
    logger.info("training for %s", cfg.max_duration)
    trainer.fit()
    return trainer


def train_from_yaml(yaml_path: str | Path, overrides: Sequence[str] = ()) -> Trainer:
    """Load ``yaml_path`` with dotlist ``overrides`` and train; the entry point of ``train.py``."""
    cfg, resolved = load_config(yaml_path, overrides, TrainConfig)
    trainer = train(cfg, resolved)
    # Leave the process group cleanly so that no rank is torn down mid-collective.
    trainer.close()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Every rank reaches here before any tears the group down: a rank that destroys it
        # while another is still in its last collective (a checkpoint barrier, say) aborts it.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return trainer
