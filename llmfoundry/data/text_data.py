"""Pretraining data: token (or text) samples from MDS folders, batched for a causal LM.

:class:`StreamingTextDataset` reads the MDS written by ``scripts/data_prep/convert_*.py``;
:class:`CausalLMCollator` pads samples into a batch; :func:`build_text_dataloader` is the
``text`` entry of the ``dataloaders`` registry (a ``train_loader:``/``eval_loader:`` section).

Run as a script to print a few samples of a dataset::

    python llmfoundry/data/text_data.py --local_path my-mds --split val --tokenizer my-tokenizer
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, cast

import numpy as np
import torch
from composer.core import DataSpec
from streaming import Stream, StreamingDataset
from streaming.base.dataset import _ShardState  # pyright: ignore[reportPrivateUsage]
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.loader_registries import (
    TEXT_COLLATOR,
    build_collate_fn,
    build_data_spec,
    loader_config,
    validate_replication,
)
from llmfoundry.data.mds_sources import (
    BAD_SHARD_HINT,
    CONVERT_HINT,
    build_streams,
    check_index_available,
    check_local_shard_sizes,
)
from llmfoundry.data.mds_sources import stream_remote_local_validate as stream_remote_local_validate
from llmfoundry.data.text_collator import CausalLMCollator
from llmfoundry.data.text_collator import count_tokens_in_batch as count_tokens_in_batch
from llmfoundry.utils.exceptions import (
    ConfigError,
    DatasetError,
    UserError,
    did_you_mean,
)
from llmfoundry.utils.registry_utils import accepted_kwargs, check_keys
from llmfoundry.utils.tokenizer_utils import pad_token_id_of

logger = logging.getLogger(__name__)

TOKEN_ENCODING_TYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
# LLM Foundry's name for the token dtypes a text MDS column may be stored in.
SUPPORTED_MDS_ENCODING_TYPES = list(TOKEN_ENCODING_TYPES)


class StreamingTextDataset(StreamingDataset):
    """Samples of token ids from MDS folders, local or streamed from an object store.

    A sample is read from its ``tokens`` column (``ndarray`` of int32/int64, or legacy ``bytes``
    decoded with ``token_encoding_type``; ``input_ids`` is accepted too) or, failing that, from a
    ``text`` column tokenized on the fly. Either way it is truncated to ``max_seq_len``. The
    keyword arguments after ``max_seq_len`` are ``streaming.StreamingDataset``'s, with its
    defaults.

    Args:
        tokenizer: needed for ``text`` columns; may be None for token columns.
        max_seq_len: the longest sample, in tokens.
        streams: several sources mixed together, instead of ``remote``/``local``.
        remote: where the MDS files live (an object-store URI), or None for local data only.
        local: the local folder (cache, when ``remote`` is set).
        split: the sub-folder of ``local``/``remote`` to read (``train``, ``val``).
        download_retry: download attempts per shard.
        download_timeout: seconds allowed per shard download.
        validate_hash: hash algorithm to check shards with, or None.
        keep_zip: keep compressed shards after decompressing.
        epoch_size: samples per epoch (resampled), or None for the dataset's size.
        predownload: samples to download ahead per worker.
        cache_limit: bytes (or ``"10gb"``) of local cache before shards are evicted.
        partition_algo: how samples are split over nodes, ranks and workers.
        num_canonical_nodes: nodes the shuffle is defined for (keeps resumption stable).
        batch_size: per-device batch size (set by the data loader builder).
        shuffle: shuffle the samples.
        shuffle_algo: streaming's shuffle algorithm (``py1e``, ``py1br``, ...).
        shuffle_seed: the shuffle's seed.
        shuffle_block_size: samples per shuffle block.
        sampling_method: ``balanced`` or ``fixed``.
        sampling_granularity: samples drawn per shard at a time.
        batching_method: ``random``, ``stratified``, ``per_stream`` or ``device_per_stream``.
        allow_unsafe_types: allow pickle columns.
        replication: ranks that see the same samples (tensor/sequence parallelism).
        stream_name: the streams registry entry used for ``remote``/``local``.
        stream_config: extra keyword arguments for that stream.
        token_encoding_type: the dtype of legacy ``bytes`` token columns.
        eos_token_id: the EOS id, stored for sequence-id computation.
        bos_token_id: the BOS id, stored for sequence-id computation.

    Raises:
        ConfigError: on a bad ``max_seq_len`` or ``token_encoding_type``, or no data source.
        DatasetError: if a local folder or split (with no ``remote``) has no MDS index.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None,
        max_seq_len: int,
        streams: Sequence[Stream] | None = None,
        remote: str | None = None,
        local: str | None = None,
        split: str | None = None,
        download_retry: int = 2,
        download_timeout: float = 60,
        validate_hash: str | None = None,
        keep_zip: bool = False,
        epoch_size: int | str | None = None,
        predownload: int | None = None,
        cache_limit: int | str | None = None,
        partition_algo: str = "relaxed",
        num_canonical_nodes: int | None = None,
        batch_size: int | None = None,
        shuffle: bool = False,
        shuffle_algo: str = "py1e",
        shuffle_seed: int = 9176,
        shuffle_block_size: int | None = None,
        sampling_method: str = "balanced",
        sampling_granularity: int = 1,
        batching_method: str = "random",
        allow_unsafe_types: bool = False,
        replication: int | None = None,
        stream_name: str = "stream",
        stream_config: dict[str, Any] | None = None,
        token_encoding_type: str = "int64",
        eos_token_id: int | None = None,
        bos_token_id: int | None = None,
    ) -> None:
        if not isinstance(max_seq_len, int) or isinstance(max_seq_len, bool) or max_seq_len <= 0:
            raise ConfigError(f"max_seq_len must be a positive integer, got {max_seq_len!r}")
        if token_encoding_type not in TOKEN_ENCODING_TYPES:
            raise ConfigError(
                f"token_encoding_type '{token_encoding_type}' is not supported"
                f"{did_you_mean(token_encoding_type, TOKEN_ENCODING_TYPES)} "
                f"(supported: {', '.join(TOKEN_ENCODING_TYPES)})"
            )
        if not streams and not remote and not local:
            raise ConfigError(
                "the dataset needs `local` (a folder of MDS files), `remote` or `streams`"
            )
        for stream in streams or []:
            check_index_available(stream.local, stream.split or split, stream.remote or remote)
        if not streams:
            check_index_available(local, split, remote)

        super().__init__(
            streams=streams,
            remote=remote,
            local=local,
            split=split,
            download_retry=download_retry,
            download_timeout=download_timeout,
            validate_hash=validate_hash,
            keep_zip=keep_zip,
            epoch_size=epoch_size,
            predownload=predownload,
            cache_limit=cache_limit,
            partition_algo=partition_algo,
            num_canonical_nodes=num_canonical_nodes,
            batch_size=batch_size,
            shuffle=shuffle,
            shuffle_algo=shuffle_algo,
            shuffle_seed=shuffle_seed,
            shuffle_block_size=shuffle_block_size,
            sampling_method=sampling_method,
            sampling_granularity=sampling_granularity,
            batching_method=batching_method,
            allow_unsafe_types=allow_unsafe_types,
            replication=replication,
            stream_name=stream_name,
            stream_config=stream_config,
        )
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.token_encoding_type = token_encoding_type
        self.eos_token_id = eos_token_id
        self.bos_token_id = bos_token_id
        # An error in Streaming's download threads, kept to be raised by name (see on_exception).
        self._thread_error: BaseException | None = None
        self._check_local_shard_sizes()

    def __getitem__(self, idx: int) -> torch.Tensor:  # type: ignore[override]
        """The token ids of sample ``idx`` (int64, at most ``max_seq_len`` of them).

        Raises:
            DatasetError: if the sample has no ``tokens``, ``input_ids`` or ``text`` column, or
                its shard cannot be read (naming the shard file).
            ConfigError: if it has only text and the dataset has no tokenizer.
        """
        sample = self._read_sample(idx)
        for column in ("tokens", "input_ids"):
            if column in sample:
                return self._read_tokens(sample[column])
        if "text" in sample:
            return self._tokenize(sample["text"])
        raise DatasetError(
            f"sample {idx} has no 'tokens', 'input_ids' or 'text' column "
            f"(columns: {', '.join(sample)}); {CONVERT_HINT}"
        )

    def __iter__(self) -> Iterator[torch.Tensor]:  # type: ignore[override]
        """This worker's samples for the epoch, in order.

        Raises:
            DatasetError: if a shard could not be downloaded, decompressed or read. (Streaming
                itself would end the epoch early, without an error, when its download thread
                fails.)
        """
        self._thread_error = None
        # Streaming yields `self[i]`, which is this class's token tensor.
        yield from cast(Iterator[torch.Tensor], super().__iter__())
        self._raise_thread_error()

    def prepare_shard(self, shard_id: int, blocking: bool = True) -> None:
        """Download and decompress a shard (Streaming's), naming the shard when that fails.

        Raises:
            DatasetError: naming the shard file and what to do.
        """
        try:
            super().prepare_shard(shard_id, blocking)
        except UserError:
            raise
        except Exception as error:
            self._stop_threads()
            # Streaming leaves a failed shard PREPARING, and whoever waits for it (the main
            # thread, blocking) would wait forever; REMOTE makes the next reader try, and fail,
            # itself.
            if self._shard_states[shard_id] == _ShardState.PREPARING:
                self._shard_states[shard_id] = _ShardState.REMOTE
            raise DatasetError(
                f"cannot prepare shard {self._shard_path(shard_id)} "
                f"({type(error).__name__}: {error}); {BAD_SHARD_HINT}"
            ) from error

    def on_exception(self, future: Future) -> None:
        """Record a download thread's error and stop the other threads.

        Streaming re-raises it inside the thread pool's callback, where nobody sees it, and the
        epoch then ends early; keeping it lets :meth:`__iter__` and :meth:`__getitem__` raise it.
        """
        error = future.exception()
        if error is not None:
            self._thread_error = error
            self._stop_threads()

    def _stop_threads(self) -> None:
        """Tell Streaming's download threads to stop (they check this event).

        Without it, a failure raised in the main thread leaves the thread that waits for the
        failed shard waiting forever, and the process hangs at exit.
        """
        event = getattr(self, "_event", None)
        if event is not None:
            event.set()

    def _raise_thread_error(self) -> None:
        error = self._thread_error
        if error is None:
            return
        if isinstance(error, UserError):
            raise error
        raise DatasetError(
            f"reading the dataset failed ({type(error).__name__}: {error}); {BAD_SHARD_HINT}"
        ) from error

    def _read_sample(self, idx: int) -> dict[str, Any]:
        """Streaming's sample ``idx`` (a column dict), with read failures named by shard file."""
        try:
            return super().__getitem__(idx)
        except UserError:
            raise
        except Exception as error:
            self._stop_threads()
            self._raise_thread_error()
            shard_id, _ = self.spanner[idx]
            raise DatasetError(
                f"cannot read sample {idx} from shard {self._shard_path(shard_id)} "
                f"({type(error).__name__}: {error}); {BAD_SHARD_HINT}"
            ) from error

    def _shard_path(self, shard_id: int) -> str:
        """The local path of shard ``shard_id``'s (first) file, compressed if it is."""
        shard = self.shards[shard_id]
        raw_info, zip_info = shard.file_pairs[0]
        info = zip_info or raw_info
        return os.path.join(shard.dirname, shard.split, info.basename)

    def _check_local_shard_sizes(self) -> None:
        """Fail by name on a local shard file cut short (see :func:`check_local_shard_sizes`)."""
        check_local_shard_sizes(self.shards)

    def _read_tokens(self, value: np.ndarray | bytes) -> torch.Tensor:
        if isinstance(value, bytes):
            value = np.frombuffer(value, dtype=self.token_encoding_type)
        return torch.from_numpy(np.array(value[: self.max_seq_len], dtype=np.int64))  # a copy

    def _tokenize(self, text: str) -> torch.Tensor:
        if self.tokenizer is None:
            raise ConfigError(
                "the dataset holds text, which needs a tokenizer; set the run's `tokenizer` "
                "(or --tokenizer)"
            )
        ids = self.tokenizer(text, truncation=True, max_length=self.max_seq_len)["input_ids"]
        return torch.tensor(ids, dtype=torch.int64)


def build_text_dataloader(
    tokenizer: PreTrainedTokenizerBase,
    device_batch_size: int,
    dataset: Mapping[str, Any],
    drop_last: bool = True,
    num_workers: int = 8,
    pin_memory: bool = True,
    prefetch_factor: int | None = None,
    persistent_workers: bool | None = None,
    timeout: float = 0,
    *,
    section: str = "train_loader",
) -> DataSpec:
    """Build a ``text`` loader section: MDS samples padded into causal-LM batches.

    The replication validator, the collate function (``text_collator``) and the ``DataSpec``
    come from their registries (see :mod:`llmfoundry.data.loader_registries`).

    Args:
        tokenizer: the run's tokenizer (its pad id pads the batches).
        device_batch_size: samples per batch on this device.
        dataset: :class:`StreamingTextDataset`'s keyword arguments (``max_seq_len`` is required;
            ``streams`` is a mapping of stream name to ``streaming.Stream`` keyword arguments),
            and ``seq_parallel_replication`` (for the replication validator).
        drop_last: drop the last incomplete batch.
        num_workers: data loader worker processes (0 loads in the main process).
        pin_memory: pin batches in page-locked memory.
        prefetch_factor: batches loaded ahead per worker (None: 2). With 0 workers it does not
            apply and is dropped with a logged note.
        persistent_workers: keep workers alive between epochs (None: True). With 0 workers it
            does not apply and is dropped with a logged note.
        timeout: seconds to wait for a batch from a worker (0: forever).
        section: the loader's key path, for messages (``train_loader``, ``eval_loader``).

    Returns:
        A ``DataSpec`` whose token count is the number of non-padding tokens.

    Raises:
        ConfigError: naming an unknown or missing ``dataset`` key.
        DatasetError: if the data is missing.
    """
    key = f"{section}.dataset"
    dataset_cfg = dict(dataset)
    dataset_keys = (accepted_kwargs(StreamingTextDataset) or set()) - {"tokenizer", "batch_size"}
    check_keys(dataset_cfg, dataset_keys | {"seq_parallel_replication"}, key)
    if "max_seq_len" not in dataset_cfg:
        raise ConfigError(f"{key}.max_seq_len is missing; set the sample length in tokens")
    replication, dataset_batch_size = validate_replication(
        dataset_cfg, tokenizer, device_batch_size, key
    )
    dataset_kwargs = {k: v for k, v in dataset_cfg.items() if k in dataset_keys}
    dataset_kwargs["replication"] = replication if replication > 1 else None
    if dataset_kwargs.get("streams") is not None:
        dataset_kwargs["streams"] = build_streams(dataset_kwargs["streams"], f"{key}.streams")
    text_dataset = StreamingTextDataset(
        tokenizer=tokenizer, batch_size=dataset_batch_size, **dataset_kwargs
    )
    worker_kwargs = worker_process_kwargs(num_workers, prefetch_factor, persistent_workers, section)
    loader_cfg = loader_config(
        "text",
        dataset_cfg,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
        timeout=timeout,
        **worker_kwargs,
    )
    collate_fn, loader_batch_size = build_collate_fn(
        TEXT_COLLATOR, loader_cfg, tokenizer, dataset_batch_size, key
    )
    loader = DataLoader(
        text_dataset,
        batch_size=loader_batch_size,
        collate_fn=collate_fn,
        drop_last=drop_last,
        num_workers=num_workers,
        # Pinning needs an accelerator; without one torch warns on every loader.
        pin_memory=pin_memory and torch.cuda.is_available(),
        timeout=timeout,
        **worker_kwargs,
    )
    return build_data_spec(loader, dataset_cfg, key)


def worker_process_kwargs(
    num_workers: int,
    prefetch_factor: int | None,
    persistent_workers: bool | None,
    section: str,
) -> dict[str, Any]:
    """The ``DataLoader`` options that only apply to worker processes, with their defaults.

    torch rejects ``prefetch_factor`` and ``persistent_workers`` when batches are loaded in the
    main process (``num_workers: 0``); an LLM Foundry loader section often sets them anyway, so
    they are dropped there, with one logged note.

    Returns:
        ``prefetch_factor`` (default 2) and ``persistent_workers`` (default True) with workers;
        nothing without.
    """
    if num_workers > 0:
        return {
            "prefetch_factor": 2 if prefetch_factor is None else prefetch_factor,
            "persistent_workers": True if persistent_workers is None else persistent_workers,
        }
    given = {"prefetch_factor": prefetch_factor, "persistent_workers": persistent_workers}
    dropped = [f"{section}.{key}" for key, value in given.items() if value is not None]
    if dropped:
        verb = "applies" if len(dropped) == 1 else "apply"
        logger.info(
            "num_workers is 0 (batches load in the main process), so %s, which only %s to "
            "worker processes, %s ignored",
            " and ".join(dropped),
            verb,
            "is" if len(dropped) == 1 else "are",
        )
    return {}


def print_samples(
    local_path: str,
    split: str | None,
    tokenizer_name: str | None,
    max_seq_len: int,
    remote_path: str | None = None,
    num_batches: int = 2,
    batch_size: int = 2,
) -> None:
    """Print the first samples of an MDS dataset: decoded text with a tokenizer, else token ids.

    Raises:
        UserError: if the data or tokenizer is missing.
    """
    from llmfoundry.utils.tokenizer_utils import build_tokenizer

    tokenizer = build_tokenizer(tokenizer_name) if tokenizer_name else None
    dataset = StreamingTextDataset(
        tokenizer=tokenizer,
        max_seq_len=max_seq_len,
        local=local_path,
        remote=remote_path,
        split=split,
        batch_size=batch_size,
    )
    loader = DataLoader(
        dataset, batch_size=batch_size, collate_fn=CausalLMCollator(pad_token_id_of(tokenizer))
    )
    for batch_index, batch in enumerate(loader):
        if batch_index >= num_batches:
            break
        for row, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
            ids = row[mask.bool()].tolist()
            print(f"--- {len(ids)} tokens ---")
            print(tokenizer.decode(ids) if tokenizer is not None else ids)


if __name__ == "__main__":
    import sys

    from llmfoundry.utils.cli_utils import run_user_command

    parser = argparse.ArgumentParser(description="Print a few samples of an MDS text dataset.")
    parser.add_argument("--local_path", required=True, help="the local MDS folder")
    parser.add_argument("--remote_path", default=None, help="the remote MDS folder, if any")
    parser.add_argument("--split", default="val", help="the split sub-folder (default: val)")
    parser.add_argument("--tokenizer", default=None, help="decode samples with this tokenizer")
    parser.add_argument("--max_seq_len", type=int, default=32, help="truncate samples to this")
    args = parser.parse_args()
    sys.exit(
        run_user_command(
            print_samples,
            args.local_path,
            args.split,
            args.tokenizer,
            args.max_seq_len,
            args.remote_path,
        )
    )
