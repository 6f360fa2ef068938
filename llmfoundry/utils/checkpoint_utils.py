"""Read Composer checkpoints safely (``torch.load(weights_only=True)``)."""

from __future__ import annotations

import datetime
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.torch_version import TorchVersion

from llmfoundry.utils.exceptions import DatasetError, MissingFileError


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


def load_composer_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Composer checkpoint with the weights-only unpickler (no arbitrary code runs).

    Raises:
        MissingFileError: if the file does not exist.
        DatasetError: if it is not a readable checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"checkpoint '{path}' does not exist; pass the .pt file Composer saved"
        )
    try:
        with torch.serialization.safe_globals(_composer_safe_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise DatasetError(
            f"'{path}' is not a readable Composer checkpoint: {str(err).splitlines()[0]}"
        ) from err
    if not isinstance(state, dict) or "state" not in state:
        raise DatasetError(f"'{path}' is not a Composer checkpoint (no 'state' key)")
    return state
