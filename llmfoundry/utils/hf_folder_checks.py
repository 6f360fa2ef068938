"""Check a Hugging Face model folder before a model is loaded from it, failing in one line.

transformers reports a folder without ``config.json`` or weights, or with a cut-short
``model.safetensors``, with an ``OSError`` or a ``SafetensorError`` about headers; these checks
name the folder, the file and what to do. Only the safetensors headers are read, not the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from llmfoundry.utils.exceptions import DatasetError, MissingFileError, first_line

# The weight files ``save_pretrained`` writes: one file, or shards listed by an index.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
REWRITE_HINT = "write the folder again with save_pretrained (or copy it again)"


def check_hf_folder(folder: str | Path, key: str) -> None:
    """Fail by name on a model folder without a readable ``config.json`` or whole weights.

    Args:
        folder: the folder (a local path).
        key: the config key or flag that named it, for messages.

    Raises:
        MissingFileError: if the folder, its ``config.json`` or its weights are missing.
        DatasetError: if ``config.json`` is not a JSON object with a ``model_type``, or a
            safetensors file is cut short or corrupted.
    """
    path = Path(folder)
    if not path.is_dir():
        raise MissingFileError(f"{key} '{folder}' is not a folder; give a save_pretrained folder")
    config = path / "config.json"
    if not config.is_file():
        raise MissingFileError(
            f"{key} '{folder}' has no config.json, so it is not a Hugging Face model folder; "
            f"{REWRITE_HINT}"
        )
    try:
        content = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{key}: '{config}' is not valid JSON; {REWRITE_HINT}") from err
    if not isinstance(content, dict) or not isinstance(content.get("model_type"), str):
        raise DatasetError(
            f"{key}: '{config}' names no model_type; {REWRITE_HINT}, or add the model_type"
        )
    for name in _weight_files(path, key):
        if name.endswith(".safetensors"):
            _check_safetensors(path / name, key)


def _weight_files(folder: Path, key: str) -> list[str]:
    """The folder's weight files (a single file, or the shards its index lists)."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return [name]
    for name in WEIGHT_INDEXES:
        index = folder / name
        if not index.is_file():
            continue
        try:
            shards = sorted(
                set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            )
        except (
            json.JSONDecodeError,
            UnicodeDecodeError,
            KeyError,
            TypeError,
            AttributeError,
        ) as err:
            raise DatasetError(f"{key}: '{index}' is not a weight index; {REWRITE_HINT}") from err
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            raise MissingFileError(
                f"{key}: '{folder / missing[0]}', listed in {name}, is missing; {REWRITE_HINT}"
            )
        return shards
    raise MissingFileError(
        f"{key} '{folder}' has a config.json but no weights ({' or '.join(WEIGHT_FILES)}); "
        f"{REWRITE_HINT}"
    )


def _check_safetensors(file: Path, key: str) -> None:
    """Read a safetensors file's header, which also checks that the file holds all it lists."""
    try:
        with safe_open(str(file), framework="pt"):
            pass
    except Exception as err:  # SafetensorError or OSError, whatever the damage
        reason = first_line(err)
        raise DatasetError(
            f"{key}: '{file}' is truncated or corrupted ({reason}); {REWRITE_HINT}"
        ) from err
