"""Guards around reading a Hugging Face dataset: ``safe_load`` and local-rank-zero-first preparation.

``safe_load: true`` (a ``dataset:`` key, default false) restricts ``hf_name`` to data that runs
no code when loaded: a local folder whose files are all ``.csv``/``.json``/``.jsonl``/
``.parquet``, or one of the builders ``json``/``csv``/``parquet`` with local ``data_files`` of
those types. Dataset scripts (``.py``), hub ids and ``hf_kwargs.trust_remote_code`` are refused.
(LLM Foundry also accepts a hub id there, downloading only such files; nothing is downloaded
here, so download them first and point ``hf_name`` at the folder.)

:func:`local_rank_zero_first` runs the loading and tokenizing of a dataset on local rank 0 of
each node first, so that it fills the ``datasets`` cache once, and then on the node's other
ranks, which read that cache instead of repeating the work at the same time.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from composer.utils import dist

from llmfoundry.utils import exceptions
from llmfoundry.utils.exceptions import ConfigError, UserError

logger = logging.getLogger(__name__)

SAFE_EXTENSIONS = (".csv", ".json", ".jsonl", ".parquet")
SAFE_BUILDERS = ("json", "csv", "parquet")
# How often the waiting ranks look for local rank 0's signal file, in seconds.
POLL_SECONDS = 0.1

T = TypeVar("T")


def check_safe_load(hf_name: str, hf_kwargs: Mapping[str, Any], key: str) -> None:
    """Refuse a source that ``safe_load: true`` does not allow (see the module docstring).

    Args:
        hf_name: the ``hf_name`` value.
        hf_kwargs: the ``hf_kwargs`` value.
        key: the ``dataset`` section's key path, for messages.

    Raises:
        ConfigError: naming ``{key}.safe_load`` and what is not allowed.
    """
    rule = (
        "a local folder of " + "/".join(SAFE_EXTENSIONS) + " files, or json/csv/parquet with "
        "local data_files of those types"
    )
    if hf_kwargs.get("trust_remote_code"):
        raise ConfigError(
            f"{key}.safe_load is true, so {key}.hf_kwargs.trust_remote_code (which runs the "
            "dataset's own code) is not allowed; remove one of them"
        )
    data_files = list(_data_files(hf_kwargs.get("data_files")))
    if hf_name in SAFE_BUILDERS:
        if not data_files:
            raise ConfigError(
                f"{key}.safe_load is true and hf_name is '{hf_name}', so {key}.hf_kwargs."
                "data_files must name the local files to read"
            )
    elif Path(hf_name).is_dir():
        for path in _files_under(Path(hf_name)):
            if path.suffix.lower() not in SAFE_EXTENSIONS:
                raise ConfigError(
                    f"{key}.safe_load is true, but {path} in hf_name '{hf_name}' is not "
                    f"{'/'.join(SAFE_EXTENSIONS)}; remove it or set safe_load: false"
                )
    else:
        what = "a dataset script" if hf_name.endswith(".py") else "not a local folder"
        raise ConfigError(
            f"{key}.safe_load is true, but hf_name '{hf_name}' is {what}; safe_load allows "
            f"only {rule} (download a hub dataset's data files first)"
        )
    for data_file in data_files:
        if "://" in data_file or Path(data_file).suffix.lower() not in SAFE_EXTENSIONS:
            raise ConfigError(
                f"{key}.safe_load is true, but data file '{data_file}' is not a local "
                f"{'/'.join(SAFE_EXTENSIONS)} file; safe_load allows only {rule}"
            )


def _data_files(value: Any) -> Iterator[str]:
    """Every path in a ``data_files`` value (a path, a list, or a mapping of split to either)."""
    if value is None:
        return
    if isinstance(value, str | os.PathLike):
        yield os.fspath(value)
    elif isinstance(value, Mapping):
        for files in value.values():
            yield from _data_files(files)
    else:
        for files in value:
            yield from _data_files(files)


def _files_under(folder: Path) -> Iterator[Path]:
    """The files of ``folder``, except hidden ones and ``datasets``' ``.lock`` files."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and not name.endswith(".lock"):
                yield Path(root) / name


def local_rank_zero_first(prepare: Callable[[], T], what: str) -> T:
    """Run ``prepare`` on each node's local rank 0 first, then on the node's other ranks.

    With one process, or ``torch.distributed`` not initialized, this is just ``prepare()``.
    Otherwise local rank 0 runs it (filling the ``datasets`` cache) while the node's other
    ranks wait for a signal file it then writes. The signal says whether it succeeded: if it
    did, the other ranks run ``prepare`` themselves (reading the cache); if not, they raise an
    error naming rank 0's, instead of waiting forever. The waiting is done on files (each
    waiting rank acknowledges the signal with a file of its own, after which rank 0 deletes
    them all), not with collective calls, so it has no time limit however long preparation
    takes and no node waits for another; the only collective call broadcasts a name for the
    files, unique to this call.

    Args:
        prepare: the work (load, tokenize, filter); it must give each rank the same result.
        what: what is prepared, for messages (``'train.jsonl'``).

    Returns:
        ``prepare()``'s result on this rank.

    Raises:
        Whatever ``prepare`` raises on local rank 0; on the other ranks the same
        :class:`~llmfoundry.utils.exceptions.UserError` type (or ``RuntimeError`` for other
        errors), with a message naming local rank 0's error.
    """
    if not dist.is_initialized() or dist.get_world_size() <= 1:
        return prepare()
    token: list[str | None] = [uuid.uuid4().hex if dist.get_global_rank() == 0 else None]
    dist.broadcast_object_list(token, src=0)
    signal = Path(tempfile.gettempdir()) / (
        f"llmfoundry-finetuning-prep-{token[0]}-node{dist.get_node_rank()}.json"
    )
    local_rank = dist.get_local_rank()
    if local_rank == 0:
        try:
            result = prepare()
        except BaseException as error:
            message = " ".join(str(error).split())  # one line
            _write_signal(signal, {"error_type": type(error).__name__, "error": message})
            _collect_acknowledgements(signal)
            raise
        _write_signal(signal, {"error_type": None, "error": None})
        _collect_acknowledgements(signal)
        return result
    logger.info("waiting for local rank 0 to prepare %s (it fills the datasets cache)", what)
    while not signal.exists():
        time.sleep(POLL_SECONDS)
    status = json.loads(signal.read_text(encoding="utf-8"))
    _acknowledgement(signal, local_rank).touch()
    if status["error_type"] is not None:
        error_class = _user_error_class(status["error_type"])
        raise error_class(
            f"local rank 0 failed to prepare {what} ({status['error_type']}: {status['error']}); "
            "see its log"
        )
    return prepare()


def _write_signal(path: Path, status: Mapping[str, Any]) -> None:
    """Write ``status`` to ``path`` atomically, so a waiting rank never reads half of it."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(status), encoding="utf-8")
    partial.replace(path)


def _acknowledgement(signal: Path, local_rank: int) -> Path:
    return signal.with_name(f"{signal.name}.read-by-{local_rank}")


def _collect_acknowledgements(signal: Path) -> None:
    """Wait until every other local rank has read ``signal``, then delete it and their files."""
    others = [_acknowledgement(signal, r) for r in range(1, dist.get_local_world_size())]
    while not all(path.exists() for path in others):
        time.sleep(POLL_SECONDS)
    for path in [signal, *others]:
        path.unlink(missing_ok=True)


def _user_error_class(name: str) -> type[Exception]:
    """Our user error type called ``name``, or ``RuntimeError`` for any other error."""
    candidate = getattr(exceptions, name, None)
    if isinstance(candidate, type) and issubclass(candidate, UserError):
        return candidate
    return RuntimeError
