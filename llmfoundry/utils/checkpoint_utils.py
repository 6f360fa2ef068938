"""Read Composer checkpoints safely: a ``.pt`` file, or the folder a sharded (FSDP) run writes.

A monolithic checkpoint is one ``torch.save`` file, read with ``torch.load(weights_only=True)``.
A sharded one (``state_dict_type: sharded``) is a folder of ``torch.distributed.checkpoint``
files (``__0_0.distcp``, ``__1_0.distcp``, ``.metadata``); it is read in this one process
without a process group, and only the parts an export needs (the model weights and the
integrations' metadata) are loaded. Nothing in either is allowed to run code while loading.
"""

from __future__ import annotations

import datetime
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.planner import ReadItem
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict
from torch.torch_version import TorchVersion

from llmfoundry.utils.exceptions import DatasetError, MissingFileError

# The file that makes a folder a torch.distributed.checkpoint (sharded) checkpoint.
SHARDED_METADATA_FILE = ".metadata"
# The parts of a sharded checkpoint loaded by default: what an export needs, not the
# optimizer state (which is twice the model's size for Adam).
EXPORT_KEYS = frozenset({"state.model", "state.integrations"})


def _composer_safe_globals() -> list[Any]:
    """Plain-data types a Composer checkpoint holds besides tensors (timestamps, versions, RNG state)."""
    from numpy._core.multiarray import _reconstruct  # type: ignore[attr-defined]

    return [
        datetime.timedelta,
        TorchVersion,
        np.ndarray,
        np.dtype,
        _reconstruct,
        type(np.dtype(np.uint32)),
        type(np.dtype(np.int64)),
        type(np.dtype(np.float64)),
    ]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_composer_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Composer checkpoint (no arbitrary code runs): a ``.pt`` file or a sharded folder.

    A sharded folder yields ``{"state": {"model": ..., "integrations": ...}}`` only (see
    :func:`load_sharded_composer_checkpoint`); a file yields everything it holds.

    Raises:
        MissingFileError: if the path does not exist.
        DatasetError: if it is not a readable Composer checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        return load_sharded_composer_checkpoint(path)
    if not path.is_file():
        raise MissingFileError(
            f"checkpoint '{path}' does not exist; pass the .pt file Composer saved"
        )
    try:
        with torch.serialization.safe_globals(_composer_safe_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise DatasetError(
            f"'{path}' is not a readable Composer checkpoint ({_first_line(err)}); pass the .pt "
            "file or the sharded checkpoint folder Composer saved"
        ) from err
    if not isinstance(state, dict) or "state" not in state:
        raise DatasetError(
            f"'{path}' is not a Composer checkpoint (it has no 'state' entry, as a bare "
            "state dict would); pass the .pt file Composer's Trainer saved"
        )
    return state


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles a sharded checkpoint's ``.metadata`` allowing only the plain types DCP writes."""

    ALLOWED = frozenset(
        {
            ("torch", "Size"),
            ("torch.serialization", "_get_layout"),
            ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
            ("collections", "OrderedDict"),
            ("pathlib", "PosixPath"),
            ("pathlib", "WindowsPath"),
            ("pathlib", "PurePosixPath"),
            ("pathlib", "PureWindowsPath"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        if module == dcp_metadata.__name__ and isinstance(getattr(dcp_metadata, name, None), type):
            return getattr(dcp_metadata, name)  # its dataclasses and enums
        if module == "torch" and isinstance(
            getattr(torch, name, None), torch.dtype | torch.layout | torch.memory_format
        ):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in checkpoint metadata")


def _check_metadata(folder: Path) -> None:
    """Unpickle ``.metadata`` with the restricted unpickler before torch reads it unrestricted.

    Raises:
        DatasetError: if it holds anything but DCP's own plain types, or is unreadable.
    """
    raw = (folder / SHARDED_METADATA_FILE).read_bytes()
    try:
        _MetadataUnpickler(io.BytesIO(raw)).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as err:
        raise DatasetError(
            f"'{folder / SHARDED_METADATA_FILE}' is not a readable sharded-checkpoint index: "
            f"{_first_line(err)}"
        ) from err


class _WeightsOnlyLoadPlanner(_EmptyStateDictLoadPlanner):
    """Rebuilds the saved state dict, reading its non-tensor items with ``weights_only=True``.

    DCP stores each non-tensor leaf (strings, numbers, lists: here the integrations' metadata)
    as its own small ``torch.save`` blob and reads it back with ``weights_only=False``; each
    blob is first read here with the safe unpickler, which refuses anything executable.
    """

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        with torch.serialization.safe_globals(_composer_safe_globals()):
            torch.load(value, weights_only=True)
        value.seek(0)
        super().load_bytes(read_item, value)


def load_sharded_composer_checkpoint(
    folder: str | Path, keys: frozenset[str] | None = EXPORT_KEYS
) -> dict[str, Any]:
    """Load a sharded Composer checkpoint folder into one process, without a process group.

    Every shard is read and the pieces are put together into whole tensors, so the result
    looks like a monolithic checkpoint: ``{"state": {"model": {name: tensor}, ...}}``.

    Args:
        folder: the folder holding ``.metadata`` and the ``__<rank>_0.distcp`` files.
        keys: the dotted prefixes to load (default: the model weights and the integrations'
            metadata); None loads everything, optimizer state included.

    Returns:
        The nested state dict.

    Raises:
        MissingFileError: if the folder does not exist.
        DatasetError: if it is not a sharded Composer checkpoint, or a shard is unreadable.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(
            f"checkpoint folder '{folder}' does not exist; pass the folder of .distcp files "
            "a sharded run saved"
        )
    if not (folder / SHARDED_METADATA_FILE).is_file():
        if (folder / "config.json").is_file():
            raise DatasetError(
                f"'{folder}' is a Hugging Face model folder, not a Composer checkpoint; it needs "
                "no conversion (load it with from_pretrained)"
            )
        raise DatasetError(
            f"'{folder}' is a folder but not a sharded Composer checkpoint (it has no "
            f"{SHARDED_METADATA_FILE} file); pass the .pt file or the folder of .distcp files "
            "Composer saved"
        )
    _check_metadata(folder)
    state: dict[str, Any] = {}
    try:
        _load_state_dict(
            state,
            storage_reader=FileSystemReader(str(folder)),
            planner=_WeightsOnlyLoadPlanner(keys=set(keys) if keys is not None else None),
            no_dist=True,
        )
    # DCP wraps each read failure in a CheckpointException (a BaseException subclass).
    except (Exception, CheckpointException) as err:
        raise DatasetError(
            f"'{folder}' could not be read as a sharded Composer checkpoint: {_first_line(err)}"
        ) from err
    if not isinstance(state.get("state"), dict) or "model" not in state["state"]:
        raise DatasetError(f"'{folder}' is not a Composer checkpoint (no 'state.model' entries)")
    return state


__all__ = [
    "EXPORT_KEYS",
    "SHARDED_METADATA_FILE",
    "load_composer_checkpoint",
    "load_sharded_composer_checkpoint",
]
