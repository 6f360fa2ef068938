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
import re
import zipfile
from collections.abc import Mapping, Sequence
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

from llmfoundry.utils.exceptions import DatasetError, MissingFileError, first_line
from llmfoundry.utils.hf_folder_checks import check_hf_folder

# The file that makes a folder a torch.distributed.checkpoint (sharded) checkpoint.
SHARDED_METADATA_FILE = ".metadata"
# The parts of a sharded checkpoint loaded by default: what an export needs, not the
# optimizer state (which is twice the model's size for Adam).
EXPORT_KEYS = frozenset({"state.model", "state.integrations"})
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_2_OR_LATER = b"\x80"
# How torch's safe unpickler names a global it refuses.
FORBIDDEN_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
# The lines of torch's safe-unpickler message that are advice, not the reason (its advice,
# to load with weights_only=False or to allow the global, would run the file's code).
TORCH_ADVICE_PREFIXES = ("Weights only load failed", "Check the documentation", "Please file")
RESAVE_HINT = (
    "copy or download it again, or use another checkpoint of the run (an earlier save, or the "
    "`latest` one)"
)


def _composer_safe_globals() -> list[Any]:
    """Plain-data types a Composer checkpoint holds besides tensors (timestamps, versions, RNG state)."""
    # The function numpy pickles arrays with (``numpy._core.multiarray._reconstruct`` in numpy
    # 2), taken from an array's own pickle recipe rather than from numpy's private modules.
    reconstruct = np.zeros(0).__reduce__()[0]
    return [
        datetime.timedelta,
        TorchVersion,
        np.ndarray,
        np.dtype,
        reconstruct,
        type(np.dtype(np.uint32)),
        type(np.dtype(np.int64)),
        type(np.dtype(np.float64)),
    ]


def _unpickling_reason(err: BaseException) -> str:
    """The reason in torch's safe-unpickler message, without its advice."""
    for line in str(err).splitlines():
        line = line.strip()
        if line and not line.startswith(TORCH_ADVICE_PREFIXES):
            return line.split(". Please use", 1)[0]
    return type(err).__name__


def load_composer_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Composer checkpoint (no arbitrary code runs): a ``.pt`` file or a sharded folder.

    A sharded folder yields ``{"state": {"model": ..., "integrations": ...}}`` only (see
    :func:`load_sharded_composer_checkpoint`); a file yields everything it holds.

    Raises:
        MissingFileError: if the path does not exist.
        DatasetError: if it is not a readable Composer checkpoint (truncated, not a checkpoint,
            or holding a reference to code, which is refused without running it).
    """
    path = Path(path)
    if path.is_dir():
        return load_sharded_composer_checkpoint(path)
    if not path.is_file():
        raise MissingFileError(
            f"checkpoint '{path}' does not exist; pass the .pt file Composer saved"
        )
    state = safe_torch_load(path)
    if not isinstance(state, dict) or "state" not in state:
        raise DatasetError(
            f"'{path}' is not a Composer checkpoint (it has no 'state' entry, as a bare "
            "state dict would); pass the .pt file Composer's Trainer saved"
        )
    return state


def safe_torch_load(path: Path, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with Composer's plain-data types allowed.

    Args:
        path: a ``torch.save`` file.
        mmap: map the tensors' storage instead of reading it (a zip-format file only).

    Raises:
        DatasetError: one line saying what is wrong with the file and what to do.
    """
    problem = file_format_problem(path)
    if problem is not None:
        raise DatasetError(f"'{path}' is not a readable Composer checkpoint: {problem}")
    try:
        with torch.serialization.safe_globals(_composer_safe_globals()):
            mmap = mmap and zipfile.is_zipfile(path)  # torch maps only its zip format
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        forbidden = FORBIDDEN_GLOBAL.search(str(err))
        if forbidden is None:
            raise DatasetError(
                f"'{path}' is not a readable Composer checkpoint ({_unpickling_reason(err)}); "
                f"{RESAVE_HINT}"
            ) from err
        raise DatasetError(
            f"'{path}' was refused and not loaded: it references "
            f"'{forbidden.group(1)}', code that a checkpoint of weights never needs and that "
            "would run on loading; use a checkpoint from a source you trust (Composer's hold only "
            "tensors and plain data)"
        ) from err
    except Exception as err:  # torch raises RuntimeError, EOFError, KeyError... on bad bytes
        raise DatasetError(
            f"'{path}' is not a readable Composer checkpoint: it is corrupted "
            f"({type(err).__name__}: {first_line(err)}); "
            f"{RESAVE_HINT}"
        ) from err


def file_format_problem(path: Path) -> str | None:
    """What makes ``path`` unreadable as a ``torch.save`` file, judged from its bytes; None if
    nothing does (it is then read, and may still fail)."""
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(16)
    if size == 0:
        return f"it is empty (0 bytes): an interrupted save or copy; {RESAVE_HINT}"
    if head.startswith(ZIP_MAGIC):
        if zipfile.is_zipfile(path):
            return None
        return (
            f"it is truncated ({size:,} bytes; its zip directory is missing): an interrupted save "
            f"or copy; {RESAVE_HINT}"
        )
    if head.startswith(PICKLE_PROTOCOL_2_OR_LATER):
        return None  # torch's legacy (pre-zip) format, or a bare pickle
    if len(head) >= 10 and head[8:10] == b'{"':
        return (
            "it is a safetensors file; pass the .pt file Composer saved "
            "(a Hugging Face folder holding it needs no conversion)"
        )
    return (
        "it is not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle); pass the "
        ".pt file Composer saved"
    )


# Config keys that set a model's size, named when a checkpoint's shapes differ from a model's.
SIZE_KEYS = (
    "d_model",
    "n_layers",
    "n_heads",
    "expansion_ratio",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
)


def _names(names: list[str]) -> str:
    return names[0] + (f" and {len(names) - 1} more" if len(names) > 1 else "")


def _weights(count: int) -> str:
    return f"{count} weight" if count == 1 else f"{count} weights"


def describe_weight_mismatch(
    expected: Mapping[str, Sequence[int]],
    found: Mapping[str, Sequence[int]],
    missing_allowed: bool = False,
) -> str:
    """How a checkpoint's weight shapes (``found``) differ from a model's (``expected``), in one
    line, or ``""`` when they fit.

    Args:
        expected: the model's weight shapes, by name.
        found: the checkpoint's, by the same names.
        missing_allowed: weights of the model that the checkpoint lacks are fine (a partial
            load, such as an adapter's).
    """
    reshaped = [n for n in expected if n in found and tuple(found[n]) != tuple(expected[n])]
    missing = [] if missing_allowed else [n for n in expected if n not in found]
    unexpected = [n for n in found if n not in expected]
    parts = []
    if reshaped:
        first = reshaped[0]
        parts.append(
            f"{_weights(len(reshaped))} of another shape ({first}: {list(found[first])} in the "
            f"checkpoint, {list(expected[first])} in the model)"
        )
    if missing:
        parts.append(f"{_weights(len(missing))} of the model missing ({_names(missing)})")
    if unexpected:
        parts.append(f"{_weights(len(unexpected))} not in the model ({_names(unexpected)})")
    return "; ".join(parts)


def describe_size_difference(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """The size keys whose values differ between two model configs (``"d_model 32 in the
    checkpoint, 64 here"``), or ``""``."""
    differences = [
        f"{key} {recorded[key]!r} in the checkpoint, {current[key]!r} here"
        for key in SIZE_KEYS
        if key in recorded and key in current and recorded[key] != current[key]
    ]
    return ", ".join(differences)


def recorded_model_config(state: Mapping[str, Any]) -> dict[str, Any]:
    """The model config Composer recorded in a checkpoint (``{}`` when it has none)."""
    try:
        content = state["state"]["integrations"]["huggingface"]["model"]["config"]["content"]
    except (KeyError, TypeError):
        return {}
    return dict(content) if isinstance(content, Mapping) else {}


def weights_mismatch_error(
    source: str, weights: Mapping[str, torch.Tensor], model: torch.nn.Module
) -> DatasetError:
    """The error for a checkpoint whose ``weights`` do not fit the ``model`` built from the
    config it records (an export): one line naming the first difference."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in weights.items()}
    mismatch = describe_weight_mismatch(expected, found) or "they do not load"
    return DatasetError(
        f"the weights in '{source}' do not fit the model config it records ({mismatch}): its "
        "weights and config come from different models; pass the checkpoint the run saved, "
        "unedited"
    )


def check_load_path(
    load_path: str, model: torch.nn.Module, key: str = "load_path", strict: bool = True
) -> None:
    """Check a local checkpoint before Composer loads it into ``model`` (``load_path``).

    Composer unpickles checkpoints with ``weights_only=False``, so a file holding code would
    run it; and a checkpoint of another model fails with a line per weight. This reads the file
    safely (its tensors memory-mapped, not read) and fails in one line instead. Remote paths and
    paths with ``{placeholders}`` are left to Composer; of a sharded checkpoint folder only
    the index is checked, of a Hugging Face folder its config and weight files
    (:func:`~llmfoundry.utils.hf_folder_checks.check_hf_folder`).

    Args:
        load_path: the path as configured.
        model: the Composer model the checkpoint is loaded into.
        key: the config key that named the path, for messages.
        strict: every weight of the model must be in the checkpoint.

    Raises:
        MissingFileError: if a local path does not exist.
        DatasetError: if the file is unreadable, refers to code, is not a Composer checkpoint,
            or its weights do not fit ``model`` (naming the first difference and the sizes).
    """
    if "://" in load_path or "{" in load_path:
        return
    path = Path(load_path).expanduser()
    if path.is_dir():
        if (path / SHARDED_METADATA_FILE).is_file():
            _check_metadata(path)
        elif (path / "config.json").is_file():
            check_hf_folder(path, key)
        else:
            raise DatasetError(
                f"{key} '{load_path}' is a folder but neither a sharded Composer checkpoint (no "
                f"{SHARDED_METADATA_FILE}) nor a Hugging Face model folder (no config.json); give "
                "a .pt file, a sharded checkpoint folder or a save_pretrained folder"
            )
        return
    if not path.is_file():
        raise MissingFileError(
            f"{key} '{load_path}' does not exist; give a checkpoint file or folder"
        )
    try:
        state = safe_torch_load(path, mmap=True)
    except DatasetError as err:
        raise DatasetError(f"{key}: {err}") from err
    weights = state.get("state", {}).get("model") if isinstance(state, dict) else None
    if not isinstance(weights, Mapping):
        raise DatasetError(
            f"{key} '{load_path}' is not a Composer checkpoint (no state.model weights); give "
            "a .pt file Composer's Trainer saved"
        )
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in weights.items() if isinstance(t, torch.Tensor)}
    mismatch = describe_weight_mismatch(expected, found, missing_allowed=not strict)
    if not mismatch:
        return
    inner = getattr(model, "model", model)
    to_dict = getattr(getattr(inner, "config", None), "to_dict", None)
    current = to_dict() if callable(to_dict) else None
    current = current if isinstance(current, Mapping) else {}
    sizes = describe_size_difference(recorded_model_config(state), current)
    if sizes:
        raise DatasetError(
            f"{key} '{load_path}' is from a model of another size ({sizes}); set {key} to a "
            "checkpoint of this model, or the model's sizes to the checkpoint's"
        )
    raise DatasetError(
        f"{key} '{load_path}' does not fit the model ({mismatch}); set {key} to a checkpoint "
        "of this model"
    )


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
            f"{first_line(err)}"
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
            f"'{folder}' could not be read as a sharded Composer checkpoint: {first_line(err)}"
        ) from err
    if not isinstance(state.get("state"), dict) or "model" not in state["state"]:
        raise DatasetError(f"'{folder}' is not a Composer checkpoint (no 'state.model' entries)")
    return state


__all__ = [
    "EXPORT_KEYS",
    "SHARDED_METADATA_FILE",
    "check_load_path",
    "describe_size_difference",
    "describe_weight_mismatch",
    "load_composer_checkpoint",
    "load_sharded_composer_checkpoint",
    "recorded_model_config",
    "safe_torch_load",
    "weights_mismatch_error",
]
