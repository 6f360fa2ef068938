"""``mono_checkpoint_saver``: every N batches, one ``.pt`` file holding the whole (unsharded) model.

Config (an entry of the ``callbacks:`` section)::

    callbacks:
      mono_checkpoint_saver:
        save_folder: /checkpoints/{run_name}/mono    # or s3://bucket/prefix, gs://..., oci://...
        batch_interval: 1000
        filename: ep{epoch}-ba{batch}.pt             # the default
        overwrite: false          # replace an object of the same name in an object store
        keep_optimizers: false    # also store the optimizer state (unsharded)

The file is a Composer checkpoint (``{"state": {...}, "rng": [...]}``) whose ``state.model`` is
the full state dict even when training shards the model (FSDP): it loads with ``load_path``,
the ``load_checkpoint`` callback or ``llmfoundry convert composer_to_hf`` like any Composer
checkpoint. Without ``keep_optimizers`` it has no ``state.optimizers``, so resume from it with
``load_weights_only: true``. ``save_folder`` and ``filename`` may use Composer's placeholders
(``{run_name}``, ``{epoch}``, ``{batch}``, ...). A checkpoint is written at every batch that is a
multiple of ``batch_interval``, and at the end of training if the last batch was not one. Local
files are written atomically (replacing one of the same name); ``overwrite`` governs uploads.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist, format_name_with_dist_and_time, reproducibility
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
)

from llmfoundry.utils.config_checks import PositiveInt, check_arguments
from llmfoundry.utils.exceptions import ConfigError
from llmfoundry.utils.file_utils import atomic_file, check_output_folder
from llmfoundry.utils.object_store import RemoteFolder, check_listable, is_remote

__all__ = ["MonolithicCheckpointSaver"]

KEY = "callbacks.mono_checkpoint_saver"


class MonolithicCheckpointSaver(Callback):
    """Save the whole model (and optionally the optimizer) to one file every ``batch_interval``.

    Args:
        save_folder: a local folder or an ``s3://``, ``gs://`` or ``oci://`` prefix.
        batch_interval: batches between checkpoints (positive).
        filename: the file's name (or path) inside ``save_folder``.
        overwrite: replace an existing object of the same name in an object store (local files
            are always replaced).
        keep_optimizers: also store the first optimizer's full state dict.

    Raises:
        ConfigError: on a non-positive ``batch_interval`` or an unsupported object-store scheme;
            (when saving) if an object of the same name exists and ``overwrite`` is false.
    """

    def __init__(
        self,
        save_folder: str,
        batch_interval: PositiveInt,
        filename: str = "ep{epoch}-ba{batch}.pt",
        overwrite: bool = False,
        keep_optimizers: bool = False,
    ) -> None:
        check_arguments(MonolithicCheckpointSaver, f"{KEY}.", batch_interval=batch_interval)
        self.check_before_build(save_folder)
        if is_remote(save_folder):
            check_listable(save_folder, f"{KEY}.save_folder")
        self.save_folder = save_folder
        self.batch_interval = batch_interval
        self.filename = filename
        self.overwrite = overwrite
        self.keep_optimizers = keep_optimizers
        self.saved: list[str] = []  # where each checkpoint went (path or URI), in order

    @staticmethod
    def check_before_build(save_folder: str, **kwargs: Any) -> None:
        """The config check's call: a local ``save_folder`` must be one that can be made (a
        remote one is listed when the callback is built).

        Raises:
            ConfigError: naming ``callbacks.mono_checkpoint_saver.save_folder``.
        """
        del kwargs
        check_output_folder(save_folder, f"{KEY}.save_folder")

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        del logger
        if int(state.timestamp.batch) % self.batch_interval == 0:
            self._save(state)

    def fit_end(self, state: State, logger: Logger) -> None:
        del logger
        if int(state.timestamp.batch) % self.batch_interval != 0:
            self._save(state)

    def _save(self, state: State) -> None:
        """Gather the checkpoint on every rank (collectives) and write it from rank 0."""
        checkpoint = whole_model_checkpoint(state, self.keep_optimizers)
        if dist.get_global_rank() != 0:
            return
        folder = format_name_with_dist_and_time(self.save_folder, state.run_name, state.timestamp)
        name = format_name_with_dist_and_time(self.filename, state.run_name, state.timestamp)
        if not is_remote(folder):
            target = Path(folder) / name
            with atomic_file(target) as staging:
                torch.save(checkpoint, staging)
            self.saved.append(str(target))
            return
        with tempfile.TemporaryDirectory() as staging_dir:
            remote = RemoteFolder(folder, f"{KEY}.save_folder", staging_dir)
            if not self.overwrite and name in remote.list_files():
                raise ConfigError(
                    f"{KEY}: {remote.url(name)} already exists; set {KEY}.overwrite: true to "
                    "replace it, or choose another save_folder"
                )
            (Path(staging_dir) / name).parent.mkdir(parents=True, exist_ok=True)
            torch.save(checkpoint, Path(staging_dir) / name)
            remote.upload(name)
            self.saved.append(remote.url(name))


def whole_model_checkpoint(state: State, keep_optimizers: bool) -> dict[str, Any]:
    """A Composer checkpoint of ``state`` with the full (unsharded) model state dict.

    Every rank must call it (gathering a sharded model is collective); with FSDP only rank 0's
    copy holds the tensors (offloaded to CPU).
    """
    options = StateDictOptions(full_state_dict=True, cpu_offload=state.fsdp_enabled)
    trainer_state = state.state_dict()
    trainer_state.pop("optimizers", None)
    trainer_state["model"] = get_model_state_dict(state.model, options=options)
    if keep_optimizers and state.optimizers:
        optimizer = state.optimizers[0]
        trainer_state["optimizers"] = {
            type(optimizer).__qualname__: get_optimizer_state_dict(
                state.model, optimizer, options=options
            )
        }
    return {"state": trainer_state, "rng": reproducibility.get_rng_state()}
