"""Write Hugging Face folders of the model while it trains (``callbacks: {hf_checkpointer: ...}``).

Each folder is what ``from_pretrained`` reads: safetensors weights at the chosen precision,
``config.json``, the tokenizer files and, for MPT, the model's own source files with
``auto_map`` (so ``trust_remote_code=True`` loads it). A LoRA (PEFT) model is written as its
adapter. Folders go to ``<save_folder>/huggingface/<huggingface_folder_name>``, locally or in an
object store, at every ``save_interval`` and once at the end of training.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from composer.core import Callback, Event, State, Time, TimeUnit
from composer.loggers import Logger, MLFlowLogger
from composer.models import HuggingFaceModel
from composer.utils import (
    create_interval_scheduler,
    dist,
    format_name_with_dist,
    format_name_with_dist_and_time,
)
from peft import PeftModel
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llmfoundry.callbacks.hf_checkpointer_options import (
    check_flat_imports,
    check_mlflow_installed,
    parse_flatten_imports,
    parse_registration,
    register_folder,
    run_with_deadline,
)
from llmfoundry.interfaces.checked_by_building import CheckedByBuilding
from llmfoundry.models.hf.export import (
    copy_with_weights,
    dtype_of_precision,
    save_tokenizer,
    write_mpt_folder,
)
from llmfoundry.models.mpt import MPTForCausalLM
from llmfoundry.utils.config_checks import NonNegativeFloat, check_arguments
from llmfoundry.utils.constants import PrecisionName
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.file_utils import atomic_directory, check_output_folder
from llmfoundry.utils.object_store import RemoteFolder, is_remote

log = logging.getLogger(__name__)

KEY = "callbacks.hf_checkpointer"
HF_SUBFOLDER = "huggingface"


def parse_save_interval(save_interval: str | int | Time) -> Time:
    """``save_interval`` as a Composer ``Time``: a time string (``1000ba``, ``1ep``, ``0.5dur``)
    or an int, which counts batches.

    Raises:
        ConfigError: naming ``callbacks.hf_checkpointer.save_interval`` for an unparsable value.
    """
    if isinstance(save_interval, Time):
        return save_interval
    if isinstance(save_interval, int) and not isinstance(save_interval, bool):
        return Time(save_interval, TimeUnit.BATCH)
    try:
        return Time.from_timestring(str(save_interval))
    except ValueError as err:
        raise ConfigError(
            f"{KEY}.save_interval={save_interval!r} is not a Composer time; write e.g. 1000ba, "
            "1ep, 100000tok, 0.25dur, or an int (batches)"
        ) from err


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module under DDP and FSDP1 wrappers (FSDP2 changes modules in place: nothing to undo)."""
    while isinstance(model, (DistributedDataParallel, FullyShardedDataParallel)):
        model = model.module
    return model


def gather_full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of ``model`` on CPU, on global rank 0; ``{}`` elsewhere.

    With FSDP (1 or 2) or other DTensor-sharded weights, gathering is a collective: every rank
    must call this at the same point. Without sharding, rank 0 reads its own copy.

    Args:
        model: the trainer's model (``state.model``), wrapped or not.
    """
    sharded = any(
        isinstance(module, FullyShardedDataParallel) for module in model.modules()
    ) or any(isinstance(param, DTensor) for param in model.parameters())
    if sharded:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return cast(dict[str, torch.Tensor], get_model_state_dict(model, options=options))
    if dist.get_global_rank() != 0:
        return {}
    return {
        name: tensor.detach().cpu() for name, tensor in unwrap_model(model).state_dict().items()
    }


def _training_is_over(state: State) -> bool:
    elapsed = state.get_elapsed_duration()
    return elapsed is not None and elapsed >= 1.0


def _strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {
        name[len(prefix) :] if name.startswith(prefix) else name: tensor
        for name, tensor in state_dict.items()
    }


def write_hf_folder(
    hf_model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    tokenizer: PreTrainedTokenizerBase | None,
    folder: Path,
    dtype: torch.dtype,
) -> None:
    """Write a Hugging Face folder of ``hf_model`` with the weights ``state_dict`` at ``dtype``.

    ``hf_model`` is only read for its class and config; the weights written are copies.

    Args:
        hf_model: the Hugging Face model inside the Composer model (an ``MPTForCausalLM``,
            another ``PreTrainedModel``, or a ``PeftModel``).
        state_dict: its weights, named relative to ``hf_model`` (for a ``PeftModel``, at least
            the adapter's).
        tokenizer: saved alongside when given.
        folder: an existing, empty folder.
        dtype: the dtype of the floating-point weights written.
    """
    if isinstance(hf_model, PeftModel):
        adapter = {
            name: tensor.to(dtype) if tensor.is_floating_point() else tensor
            for name, tensor in state_dict.items()
        }
        # PEFT picks the adapter's weights out of the given state dict and writes them with
        # adapter_config.json, as its own save_pretrained would.
        hf_model.save_pretrained(str(folder), state_dict=adapter)
    elif isinstance(hf_model, MPTForCausalLM):
        write_mpt_folder(copy_with_weights(hf_model, state_dict, dtype), None, folder)
    elif isinstance(hf_model, PreTrainedModel):
        copy_with_weights(hf_model, state_dict, dtype).save_pretrained(folder)
    else:
        raise ConfigError(
            f"{KEY} writes Hugging Face models, but the trainer's model wraps a "
            f"{type(hf_model).__name__}; use an mpt_causal_lm or hf_causal_lm model"
        )
    if tokenizer is not None:
        save_tokenizer(tokenizer, folder)


class HuggingFaceCheckpointer(CheckedByBuilding, Callback):
    """Save the model as Hugging Face folders during training and at its end.

    Folders are ``<save_folder>/huggingface/<huggingface_folder_name>``; each appears complete
    or not at all locally (written under a temporary name, then renamed). In an object store
    the files are uploaded with ``config.json`` last, so a folder with a config is complete.
    Under FSDP every rank takes part in gathering the weights and global rank 0 writes. The
    live model is never cast or modified: the folder is written from a copy of its weights.

    Args:
        save_folder: a local folder or object-store URI (``s3://bucket/prefix``); ``{run_name}``
            is filled in.
        save_interval: how often to save: a Composer time string (``1000ba``, ``1ep``,
            ``0.5dur``...) or an int (batches). The end of training always saves once.
        huggingface_folder_name: each folder's name; Composer's time fields (``{batch}``,
            ``{epoch}``, ``{token}``...) and ``{run_name}`` are filled in.
        precision: dtype of the saved weights: ``float32``, ``bfloat16`` or ``float16`` (or
            ``fp32``/``bf16``/``fp16``).
        overwrite: replace a folder of the same name; if False, finding one is an error.
        mlflow_registered_model_name: also log the final folder to the run's MLflow logger and
            register it in MLflow's model registry under this name.
        mlflow_logging_config: ``task``, ``metadata`` and ``input_example`` of the registered
            model (see :mod:`~llmfoundry.callbacks.hf_checkpointer_options`).
        flatten_imports: packages the exported model code must not import (LLM Foundry
            copies them into the export; ours imports none, which the export checks).
        final_register_only: at the end of training only register the model; write no folder
            to ``save_folder`` then (unless registering fails). Needs
            ``mlflow_registered_model_name``; without it a warning says it is ignored.
        register_wait_seconds: the longest the end of training waits for the registration.

    Raises:
        ConfigError: on an unknown precision, unparsable save_interval or a bad value of the
            options above; at the start of training, with ``mlflow_registered_model_name`` but
            no ``mlflow`` logger.
        MissingDependencyError: at the start of training, with
            ``mlflow_registered_model_name`` but mlflow not installed.
    """

    def __init__(
        self,
        save_folder: str,
        save_interval: str | int | Time,
        huggingface_folder_name: str = "ba{batch}",
        precision: PrecisionName = "float32",
        overwrite: bool = True,
        mlflow_registered_model_name: str | None = None,
        mlflow_logging_config: dict[str, Any] | None = None,
        flatten_imports: Sequence[str] = ("llmfoundry",),
        final_register_only: bool = False,
        register_wait_seconds: NonNegativeFloat = 7200,
    ) -> None:
        self.dtype = dtype_of_precision(precision, f"{KEY}.precision")
        self.save_interval = parse_save_interval(save_interval)
        check_output_folder(save_folder, f"{KEY}.save_folder")
        self.save_folder = save_folder
        self.huggingface_folder_name = huggingface_folder_name
        self.overwrite = overwrite
        self.mlflow_registered_model_name = mlflow_registered_model_name
        check_arguments(
            HuggingFaceCheckpointer, f"{KEY}.", register_wait_seconds=register_wait_seconds
        )
        self.registration = parse_registration(
            mlflow_registered_model_name, mlflow_logging_config, register_wait_seconds
        )
        self.flatten_imports = parse_flatten_imports(flatten_imports)
        if final_register_only and self.registration is None:
            log.warning(
                "%s.final_register_only needs mlflow_registered_model_name; ignoring it and "
                "writing the final folder to %s",
                KEY,
                save_folder,
            )
        self.final_register_only = final_register_only and self.registration is not None
        self._is_due: Callable[[State, Event], bool] = create_interval_scheduler(
            self.save_interval, include_end_of_training=False
        )
        self._mlflow_logger: MLFlowLogger | None = None
        self._last_saved_batch: int | None = None
        self._registered = False
        self._registration_failed = False
        # The folder written last (local path or URI), for callers and tests.
        self.last_saved: str | None = None

    def init(self, state: State, logger: Logger) -> None:
        del state
        if self.mlflow_registered_model_name is None:
            return
        check_mlflow_installed()
        mlflow_loggers = [d for d in logger.destinations if isinstance(d, MLFlowLogger)]
        if not mlflow_loggers:
            raise ConfigError(
                f"{KEY}.mlflow_registered_model_name needs an MLflow logger to register the "
                "model with; add loggers.mlflow or remove mlflow_registered_model_name"
            )
        self._mlflow_logger = mlflow_loggers[0]

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        del logger
        if self._is_due(state, Event.BATCH_CHECKPOINT):
            self._save(state, final=_training_is_over(state))

    def epoch_checkpoint(self, state: State, logger: Logger) -> None:
        del logger
        if self._is_due(state, Event.EPOCH_CHECKPOINT):
            self._save(state, final=_training_is_over(state))

    def fit_end(self, state: State, logger: Logger) -> None:
        del logger
        # Every rank sees the same timestamp and flags, so all agree whether this save happens.
        saved_now = self._last_saved_batch == int(state.timestamp.batch)
        unregistered = self._mlflow_logger is not None and not self._registered
        if not saved_now or (unregistered and not self._registration_failed):
            self._save(state, final=True)

    def _save(self, state: State, final: bool) -> None:
        """Gather the weights (all ranks) and write the folder (global rank 0).

        ``final``: the folder is the end-of-training one (the one registered with MLflow).
        """
        self._last_saved_batch = int(state.timestamp.batch)
        run_name = state.run_name or ""
        folder_name = format_name_with_dist_and_time(
            self.huggingface_folder_name, run_name, state.timestamp
        )
        root = format_name_with_dist(self.save_folder, run_name).rstrip("/")
        destination = f"{root}/{HF_SUBFOLDER}/{folder_name}"

        state_dict = gather_full_state_dict(state.model)
        failure: BaseException | None = None
        if dist.get_global_rank() == 0:
            try:
                self._write(state, state_dict, destination, final)
            except Exception as err:
                failure = err
        del state_dict
        # Keep the ranks together while rank 0 writes, and let a failure there stop every rank
        # (instead of leaving the others waiting in their next collective until the timeout).
        outcome = [None if failure is None else f"{type(failure).__name__}: {failure}"]
        dist.broadcast_object_list(outcome, src=0)
        if failure is not None:
            raise failure
        if outcome[0] is not None:
            raise RuntimeError(f"{KEY}: rank 0 failed to write {destination}: {outcome[0]}")

    def _write(
        self, state: State, state_dict: dict[str, torch.Tensor], destination: str, final: bool
    ) -> None:
        """Write the folder from the gathered weights (global rank 0)."""
        composer_model = cast(HuggingFaceModel, unwrap_model(state.model))
        hf_model = unwrap_model(composer_model.model)
        tokenizer = cast(PreTrainedTokenizerBase | None, composer_model.tokenizer)
        weights = _strip_prefix(state_dict, "model.")
        if final and self.final_register_only:
            if self._register_only(hf_model, weights, tokenizer):
                return
            final = False  # registering failed (logged): keep the weights in save_folder
        log.info("%s: writing %s", KEY, destination)
        if is_remote(destination):
            self._write_remote(hf_model, weights, tokenizer, destination, final)
        else:
            self._write_local(hf_model, weights, tokenizer, Path(destination), final)
        self.last_saved = destination

    def _write_local(
        self,
        hf_model: torch.nn.Module,
        weights: dict[str, torch.Tensor],
        tokenizer: PreTrainedTokenizerBase | None,
        destination: Path,
        final: bool,
    ) -> None:
        if destination.exists() and not self.overwrite:
            raise ConfigError(
                f"{KEY}: '{destination}' already exists; set {KEY}.overwrite: true or choose "
                "another save_folder"
            )
        with atomic_directory(destination) as staging:
            self._write_folder(hf_model, weights, tokenizer, staging)
        if final:
            self._register_with_mlflow(destination)

    def _write_remote(
        self,
        hf_model: torch.nn.Module,
        weights: dict[str, torch.Tensor],
        tokenizer: PreTrainedTokenizerBase | None,
        destination: str,
        final: bool,
    ) -> None:
        with tempfile.TemporaryDirectory(prefix="hf_checkpointer-") as staging:
            remote = RemoteFolder(destination, f"{KEY}.save_folder", staging)
            existing = set(remote.list_files())
            if existing and not self.overwrite:
                raise ConfigError(
                    f"{KEY}: '{destination}' already holds files; set {KEY}.overwrite: true or "
                    "choose another save_folder"
                )
            self._write_folder(hf_model, weights, tokenizer, Path(staging))
            # config.json last: a loader finds no config until every weight file is there.
            remote.upload_local_files(last=lambda name: (name == "config.json",))
            written = {p.relative_to(staging).as_posix() for p in Path(staging).rglob("*")}
            remote.delete(sorted(existing - written))  # files of an older save of that name
            if final:
                self._register_with_mlflow(Path(staging))

    def _write_folder(
        self,
        hf_model: torch.nn.Module,
        weights: dict[str, torch.Tensor],
        tokenizer: PreTrainedTokenizerBase | None,
        folder: Path,
    ) -> None:
        """Write the Hugging Face folder and check its code against ``flatten_imports``."""
        write_hf_folder(hf_model, weights, tokenizer, folder, self.dtype)
        check_flat_imports(folder, self.flatten_imports)

    def _register_only(
        self,
        hf_model: torch.nn.Module,
        weights: dict[str, torch.Tensor],
        tokenizer: PreTrainedTokenizerBase | None,
    ) -> bool:
        """``final_register_only``: register a folder written to a temporary place.

        Returns:
            Whether it was registered; if not (the error is logged), the caller writes the
            folder to ``save_folder`` instead, so that the final weights are kept.
        """
        with tempfile.TemporaryDirectory(prefix="hf_checkpointer-") as staging:
            self._write_folder(hf_model, weights, tokenizer, Path(staging))
            try:
                self._register_with_mlflow(Path(staging))
            except Exception as err:
                log.error(
                    "%s: registering the final model failed (%s: %s); writing it to save_folder",
                    KEY,
                    type(err).__name__,
                    err,
                )
                self._registration_failed = True
                return False
        return True

    def _register_with_mlflow(self, folder: Path) -> None:
        """Log ``folder`` to the MLflow run and register it as a model version, waiting at most
        ``register_wait_seconds``."""
        registration = self.registration
        if self._mlflow_logger is None or registration is None:
            return
        mlflow_logger: Any = self._mlflow_logger
        if mlflow_logger._run_id is None:  # the logger is disabled on this rank
            log.warning("%s: the MLflow logger has no run; not registering the model", KEY)
            return
        run_with_deadline(
            lambda: register_folder(mlflow_logger, folder, registration),
            registration.wait_seconds,
            f"registering {registration.model_name} with MLflow",
        )
        self._registered = True
