"""The MDS dataset the ``text`` and ``finetuning`` loaders read: Streaming's ``StreamingDataset``
with its settings checked and its failures named.

:class:`MDSDataset` checks its arguments and the local MDS files before Streaming reads them,
and turns Streaming's download and read failures (which Streaming's threads swallow, ending the
epoch early) into one-line errors naming the shard file. Its subclasses say what a sample is,
in ``__getitem__``: :class:`~llmfoundry.data.text_data.StreamingTextDataset` (token ids) and
:class:`~llmfoundry.data.finetuning.mds_source.StreamingFinetuningDataset` (finetuning turns).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray
from streaming import Stream, StreamingDataset
from streaming.base.dataset import _ShardState
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.mds_sources import (
    BAD_SHARD_HINT,
    check_index_available,
    check_local_shard_sizes,
    check_streams_section,
)
from llmfoundry.utils.config_checks import (
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    check_arguments,
    check_fields,
    parameter_hints,
)
from llmfoundry.utils.exceptions import ConfigError, DatasetError, UserError

# What Streaming's ``__getitem__`` takes: one index, or several (the subclasses take one).
SampleIndex = int | slice | list[int] | NDArray[np.int64]

TokenEncoding = Literal["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
TOKEN_ENCODING_TYPES = get_args(TokenEncoding)
# Streaming's choices (``streaming.base.shuffle.algos``, ``streaming.base.partition.algos`` and
# the checks in ``StreamingDataset.__init__``), so that the config check names a bad one.
ShuffleAlgo = Literal["naive", "py1br", "py1e", "py1s", "py2s"]
PartitionAlgo = Literal["orig", "relaxed"]
SamplingMethod = Literal["balanced", "fixed"]
BatchingMethod = Literal["random", "stratified", "per_stream", "device_per_stream"]


class MDSDataset(StreamingDataset):
    """Samples from MDS folders, local or streamed from an object store (subclasses decode them).

    The keyword arguments after ``max_seq_len`` are ``streaming.StreamingDataset``'s, with its
    defaults. Subclasses override ``__getitem__`` (what ``dataset[i]`` and iteration give;
    Streaming's ``get_item`` still gives the raw column dict) and read that dict with
    :meth:`_read_sample`.

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
        max_seq_len: PositiveInt,
        streams: Sequence[Stream] | None = None,
        remote: str | None = None,
        local: str | None = None,
        split: str | None = None,
        download_retry: NonNegativeInt = 2,
        download_timeout: PositiveFloat = 60,
        validate_hash: str | None = None,
        keep_zip: bool = False,
        epoch_size: PositiveInt | str | None = None,
        predownload: NonNegativeInt | None = None,
        cache_limit: int | str | None = None,
        partition_algo: PartitionAlgo = "relaxed",
        num_canonical_nodes: PositiveInt | None = None,
        batch_size: PositiveInt | None = None,
        shuffle: bool = False,
        shuffle_algo: ShuffleAlgo = "py1e",
        shuffle_seed: NonNegativeInt = 9176,
        shuffle_block_size: PositiveInt | None = None,
        sampling_method: SamplingMethod = "balanced",
        sampling_granularity: PositiveInt = 1,
        batching_method: BatchingMethod = "random",
        allow_unsafe_types: bool = False,
        replication: PositiveInt | None = None,
        stream_name: str = "stream",
        stream_config: dict[str, Any] | None = None,
        token_encoding_type: TokenEncoding = "int64",
        eos_token_id: int | None = None,
        bos_token_id: int | None = None,
    ) -> None:
        check_arguments(
            MDSDataset,
            "",
            max_seq_len=max_seq_len,
            token_encoding_type=token_encoding_type,
            partition_algo=partition_algo,
            shuffle_algo=shuffle_algo,
            sampling_method=sampling_method,
            batching_method=batching_method,
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

    def __iter__(self) -> Iterator[Any]:
        """This worker's samples for the epoch, in order (what the subclass's ``get_item`` makes).

        Raises:
            DatasetError: if a shard could not be downloaded, decompressed or read. (Streaming
                itself would end the epoch early, without an error, when its download thread
                fails.)
        """
        self._thread_error = None
        yield from super().__iter__()
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

    def _read_sample(self, at: SampleIndex) -> tuple[int, dict[str, Any]]:
        """Streaming's sample ``at`` (its index and its column dict), with read failures named
        by shard file.

        Raises:
            TypeError: if ``at`` is not one index (Streaming's ``__getitem__`` also takes slices
                and lists of indices, which the subclasses do not decode).
            DatasetError: naming the shard file that cannot be read.
        """
        if not isinstance(at, int | np.integer):
            raise TypeError(
                f"{type(self).__name__} reads one sample at a time; index it with an int, "
                f"not a {type(at).__name__}"
            )
        idx = int(at)
        try:
            return idx, super().__getitem__(idx)
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


def check_dataset_options(options: Mapping[str, Any], path: str) -> None:
    """Check the values a loader's ``dataset:`` section gives :class:`MDSDataset` (the caller
    checks which keys it may have): ``streams`` is the mapping of ``Stream`` arguments a YAML
    writes (the loader builds the streams), the rest fit the constructor's annotations.

    Raises:
        ConfigError: naming the key (``train_loader.dataset.streams.a.proportion``).
    """
    values = {key: value for key, value in options.items() if key != "streams"}
    check_fields(values, parameter_hints(MDSDataset), path, open_keys=True)
    check_streams_section(options.get("streams"), f"{path}.streams")
