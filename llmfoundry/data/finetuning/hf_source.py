"""Reading a Hugging Face dataset for the finetuning loader: load, preprocess, tokenize, filter.

:func:`build_hf_finetuning_dataset` loads ``hf_name``'s split, runs each row through the
preprocessing function, tokenizes it into turns (the final response ending with EOS) and drops
the examples left with no target token within ``max_seq_len``.

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
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from transformers import PreTrainedTokenizerBase

from llmfoundry.data.finetuning.dataset_config import FinetuningDatasetConfig
from llmfoundry.data.finetuning.formatting import tokenize_example
from llmfoundry.data.finetuning.tasks import PreprocessingFn, dataset_constructor
from llmfoundry.data.finetuning.turns import (
    TargetPolicy,
    example_length,
    is_trainable,
    with_final_eos,
)
from llmfoundry.utils import exceptions
from llmfoundry.utils.exceptions import ConfigError, DatasetError, MissingFileError, UserError
from llmfoundry.utils.tokenizer_utils import eos_token_id_of

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

SAFE_EXTENSIONS = (".csv", ".json", ".jsonl", ".parquet")
SAFE_BUILDERS = ("json", "csv", "parquet")
# How often the waiting ranks look for local rank 0's signal file, in seconds.
POLL_SECONDS = 0.1

T = TypeVar("T")


def _turn_features() -> datasets.Features:
    """The columns of a tokenized example (``datasets`` is imported only where it is used: a
    run that reads no Hugging Face dataset does not pay for it)."""
    import datasets

    return datasets.Features(
        {
            "turns": datasets.List(
                {
                    "input_ids": datasets.List(datasets.Value("int32")),
                    "labels": datasets.List(datasets.Value("int32")),
                }
            ),
            "_length": datasets.Value("int64"),
            "_trainable": datasets.Value("bool"),
        }
    )


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
    from composer.utils import dist  # only for a loader; the converter never gets here

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
    from composer.utils import dist

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


def describe_source(hf_name: str, split: str | None, hf_kwargs: Mapping[str, Any]) -> str:
    """How error messages name an HF source: its data file(s) when given, else its name."""
    data_files = hf_kwargs.get("data_files")
    if isinstance(data_files, Mapping) and split in data_files:
        data_files = data_files[split]
    if isinstance(data_files, str):
        return f"'{data_files}'"
    if isinstance(data_files, list | tuple) and len(data_files) == 1:
        return f"'{data_files[0]}'"
    return f"dataset '{hf_name}' split '{split}'"


def load_hf_split(
    hf_name: str, split: str | None, hf_kwargs: Mapping[str, Any], key: str
) -> datasets.Dataset:
    """``datasets.load_dataset(hf_name, split=split, **hf_kwargs)`` with one-line errors.

    Raises:
        ConfigError: if no split is given or the result is not a map-style dataset.
        DatasetError: if the split does not exist (naming those that do).
        MissingFileError: if a data file is missing.
    """
    import datasets

    if split is None:
        raise ConfigError(f"{key}.split is missing; name the split to read (e.g. train)")
    try:
        loaded = datasets.load_dataset(hf_name, split=split, **hf_kwargs)
    except ValueError as err:
        match = re.search(r"Unknown split \"[^\"]*\"\. Should be one of (\[.*\])", str(err))
        if match is None:
            raise
        raise DatasetError(
            f"{key}.split '{split}' is not a split of '{hf_name}'; available: {match.group(1)}"
        ) from err
    except FileNotFoundError as err:
        raise MissingFileError(
            f"{key}: cannot load '{hf_name}' ({err}); check hf_name and hf_kwargs.data_files"
        ) from err
    if not isinstance(loaded, datasets.Dataset):
        raise ConfigError(
            f"{key}: load_dataset returned a {type(loaded).__name__}; the finetuning loader "
            "needs a map-style dataset (do not set hf_kwargs.streaming)"
        )
    return loaded


def build_hf_finetuning_dataset(
    config: FinetuningDatasetConfig, tokenizer: PreTrainedTokenizerBase, key: str
) -> tuple[datasets.Dataset, list[int]]:
    """Load, preprocess, tokenize and filter an HF dataset into ``{'turns': [...]}`` rows.

    With several processes, each node's local rank 0 does this first and the node's other
    ranks then read the ``datasets`` cache it filled (:func:`.hf_source.local_rank_zero_first`).

    Returns:
        The dataset and each kept example's length in tokens after truncation.

    Raises:
        DatasetError: naming the source, row and field of a bad example, or if every example
            is dropped.
        ConfigError: on a bad preprocessing function, or a source ``safe_load`` refuses.
    """
    assert config.hf_name is not None
    hf_name = config.hf_name
    if config.safe_load:
        check_safe_load(hf_name, config.hf_kwargs, key)
    function = dataset_constructor.resolve(
        config.preprocessing_fn, hf_name, f"{key}.preprocessing_fn"
    )
    source = describe_source(hf_name, config.split, config.hf_kwargs)
    return local_rank_zero_first(
        lambda: _tokenize_and_filter(config, function, tokenizer, source, key), source
    )


def _tokenize_and_filter(
    config: FinetuningDatasetConfig,
    function: PreprocessingFn | None,
    tokenizer: PreTrainedTokenizerBase,
    source: str,
    key: str,
) -> tuple[datasets.Dataset, list[int]]:
    assert config.hf_name is not None
    raw = load_hf_split(config.hf_name, config.split, config.hf_kwargs, key)
    policy = TargetPolicy.from_config(config.target_prompts, config.target_responses, key)
    max_seq_len = config.max_seq_len
    decoder_only = config.decoder_only_format

    def tokenize_row(row: dict[str, Any], index: int) -> dict[str, Any]:
        where = f"{source}, row {index}"
        example = preprocess_row(function, row, where)
        turns = tokenize_example(example, tokenizer, where)["turns"]
        turns = list(with_final_eos(turns, eos_token_id_of(tokenizer)))
        trainable = is_trainable(turns, policy, max_seq_len) if decoder_only else True
        return {"turns": turns, "_length": example_length(turns), "_trainable": trainable}

    tokenized = raw.map(
        tokenize_row,
        with_indices=True,
        remove_columns=raw.column_names,
        features=_turn_features(),
        desc="Tokenizing finetuning examples",
    )
    lengths = tokenized["_length"]
    trainable = tokenized["_trainable"]
    truncated = sum(
        1 for n, keep in zip(lengths, trainable, strict=True) if keep and n > max_seq_len
    )
    dropped = len(trainable) - sum(trainable)
    logger.info(
        "%s: %d examples; %d longer than max_seq_len=%d are truncated (their last response is "
        "cut); %d dropped (no target token left within max_seq_len)",
        source,
        len(trainable),
        truncated,
        max_seq_len,
        dropped,
    )
    if dropped == len(trainable):
        raise DatasetError(
            f"{source}: all {dropped} examples were dropped (their prompts fill "
            f"max_seq_len={max_seq_len} or they have no target token); raise {key}.max_seq_len"
        )
    kept = tokenized.filter(lambda keep: keep, input_columns="_trainable")
    kept_lengths = [min(n, max_seq_len) for n, keep in zip(lengths, trainable, strict=True) if keep]
    return kept.remove_columns(["_length", "_trainable"]), kept_lengths


def preprocess_row(
    function: PreprocessingFn | None, row: Mapping[str, Any], where: str
) -> Mapping[str, Any]:
    """``function(row)`` (or ``row`` itself without a function), checked to return a mapping.

    Args:
        function: the preprocessing function, or None.
        row: the dataset's row.
        where: the row's source and number, for messages.

    Raises:
        DatasetError: naming ``where`` if the function fails or returns something else.
    """
    if function is None:
        return row
    name = getattr(function, "__name__", repr(function))
    try:
        example = function(row)
    except KeyError as err:
        raise DatasetError(
            f"{where}: preprocessing function {name} needs field {err} "
            f"(fields: {', '.join(row)}); fix the data or dataset.preprocessing_fn"
        ) from err
    except Exception as err:
        # The user's function failed on this row (e.g. a field JSON loading filled with None).
        raise DatasetError(
            f"{where}: preprocessing function {name} failed ({type(err).__name__}: {err}); "
            "fix the row or make the function handle it"
        ) from err
    if not isinstance(example, Mapping):
        raise DatasetError(
            f"{where}: preprocessing function {name} returned {type(example).__name__}, not a "
            "dict with 'prompt'/'response' or 'messages'"
        )
    return example
