"""StreamingTextDataset, the causal-LM collator and the ``text`` data loader."""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from streaming import MDSWriter, Stream
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.cli.commands.preview_text_data import main as preview_main
from llmfoundry.command_utils.data_prep.convert_dataset_json import convert_dataset_json
from llmfoundry.command_utils.data_prep.convert_text_to_mds import convert_text_to_mds
from llmfoundry.command_utils.preflight import check_loader_section
from llmfoundry.data import CausalLMCollator, StreamingTextDataset, build_text_dataloader
from llmfoundry.data.mds_dataset import TokenEncoding
from llmfoundry.data.text_data import sample_texts, stop_persistent_workers
from llmfoundry.utils.builders import build_dataloader_from_section
from llmfoundry.utils.exceptions import ConfigError, DatasetError

PAD_ID = 1
# Token samples of different lengths; the last is longer than the loaders' max_seq_len of 16.
TOKEN_SAMPLES = [list(range(2, 2 + n)) for n in (16, 5, 16, 9, 16, 3, 16, 40)]


def write_samples(
    folder: Path, columns: dict[str, str], samples: Sequence[Mapping[str, object]]
) -> Path:
    with MDSWriter(out=str(folder), columns=columns) as writer:
        for sample in samples:
            writer.write(dict(sample))
    return folder


@pytest.fixture
def token_mds(tmp_path: Path) -> Path:
    """An MDS root with a ``train`` split of int32 token samples."""
    samples = [{"tokens": np.asarray(s, dtype=np.int32)} for s in TOKEN_SAMPLES]
    write_samples(tmp_path / "tokens" / "train", {"tokens": "ndarray:int32"}, samples)
    return tmp_path / "tokens"


def test_token_samples_read_back_truncated_to_max_seq_len(token_mds: Path) -> None:
    dataset = StreamingTextDataset(
        tokenizer=None, max_seq_len=16, local=str(token_mds), split="train"
    )
    samples = [dataset[i] for i in range(len(TOKEN_SAMPLES))]
    assert all(s.dtype == torch.int64 for s in samples)
    assert [s.tolist() for s in samples] == [s[:16] for s in TOKEN_SAMPLES]


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_legacy_bytes_columns_are_decoded(tmp_path: Path, dtype: TokenEncoding) -> None:
    ids = list(range(100, 130))
    write_samples(
        tmp_path / "mds", {"tokens": "bytes"}, [{"tokens": np.asarray(ids, dtype).tobytes()}]
    )
    dataset = StreamingTextDataset(
        tokenizer=None, max_seq_len=20, local=str(tmp_path / "mds"), token_encoding_type=dtype
    )
    assert dataset[0].tolist() == ids[:20]


def test_text_samples_are_tokenized_on_the_fly(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase, corpus_texts: list[str]
) -> None:
    texts = ["def f(x):\n    return x\n", corpus_texts[0][:2000]]
    write_samples(tmp_path / "mds" / "val", {"text": "str"}, [{"text": t} for t in texts])
    dataset = StreamingTextDataset(
        tokenizer=tokenizer, max_seq_len=32, local=str(tmp_path / "mds"), split="val"
    )
    assert dataset[0].tolist() == tokenizer(texts[0])["input_ids"]
    assert len(dataset[0]) < 32
    assert dataset[1].tolist() == tokenizer(texts[1], verbose=False)["input_ids"][:32]

    no_tokenizer = StreamingTextDataset(
        tokenizer=None, max_seq_len=32, local=str(tmp_path / "mds"), split="val"
    )
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        no_tokenizer[0]


def test_missing_data_is_named(tmp_path: Path, token_mds: Path) -> None:
    with pytest.raises(DatasetError, match=r"'.*nowhere' does not exist.*convert_text_to_mds\.py"):
        StreamingTextDataset(
            tokenizer=None, max_seq_len=8, local=str(tmp_path / "nowhere"), split="train"
        )
    with pytest.raises(
        DatasetError, match=r"split 'val' not found in .*splits there: train; write it"
    ):
        StreamingTextDataset(tokenizer=None, max_seq_len=8, local=str(token_mds), split="val")
    misspelled: Any = "int61"  # what a YAML could hold; the signature's Literal does not allow it
    with pytest.raises(ConfigError, match="did you mean 'int64'"):
        StreamingTextDataset(
            tokenizer=None, max_seq_len=8, local=str(token_mds), token_encoding_type=misspelled
        )


def test_collator_pads_on_the_right_and_masks_labels() -> None:
    batch = CausalLMCollator(pad_token_id=PAD_ID)(
        [torch.tensor([5, 6, 7]), torch.tensor([8, 9, 10, 11, 12])]
    )

    assert batch["input_ids"].tolist() == [[5, 6, 7, PAD_ID, PAD_ID], [8, 9, 10, 11, 12]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    # Not shifted: the model shifts the labels itself.
    assert batch["labels"].tolist() == [[5, 6, 7, -100, -100], [8, 9, 10, 11, 12]]


def test_text_loader_batches_and_counts_non_pad_tokens(
    token_mds: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    spec = build_text_dataloader(
        tokenizer,
        4,
        {"local": str(token_mds), "split": "train", "max_seq_len": 16, "eos_token_id": 0},
        num_workers=0,
        pin_memory=False,
    )
    batches = list(spec.dataloader)

    assert [b["input_ids"].shape for b in batches] == [(4, 16), (4, 16)]
    lengths = [min(len(s), 16) for s in TOKEN_SAMPLES]
    assert batches[0]["input_ids"][1].tolist() == TOKEN_SAMPLES[1] + [tokenizer.pad_token_id] * 11
    counts = [spec.get_num_tokens_in_batch(b) for b in batches]
    assert counts == [sum(lengths[:4]), sum(lengths[4:])]
    assert (
        spec.get_num_tokens_in_batch(batches[0], token_type="loss_generating")
        == sum(lengths[:4]) - 4
    )
    assert isinstance(spec.dataloader, DataLoader)
    assert isinstance(spec.dataloader.dataset, StreamingTextDataset)
    assert spec.dataloader.dataset.eos_token_id == 0


def test_eos_token_id_must_be_the_tokenizers_unless_overridden(
    token_mds: Path, tokenizer: PreTrainedTokenizerBase, caplog: pytest.LogCaptureFixture
) -> None:
    # LLM Foundry's check: a sequence_id split at an id the tokenizer does not end texts with is
    # a mistake unless override_eos_token_id_mismatch_error says otherwise.
    dataset = {"local": str(token_mds), "split": "train", "max_seq_len": 16, "eos_token_id": 4}
    with pytest.raises(
        ConfigError,
        match=r"^train_loader\.dataset\.eos_token_id is 4, but the tokenizer's eos_token_id is 0; "
        r"fix it, or set train_loader\.dataset\.override_eos_token_id_mismatch_error: true$",
    ):
        build_text_dataloader(tokenizer, 4, dataset, num_workers=0)
    overridden = {**dataset, "override_eos_token_id_mismatch_error": True}
    check_loader_section("train_loader", {"name": "text", "dataset": overridden})
    with caplog.at_level(logging.WARNING, logger="llmfoundry.data.utils"):
        spec = build_text_dataloader(tokenizer, 4, overridden, num_workers=0)
    assert "eos_token_id is 4, but the tokenizer's eos_token_id is 0" in caplog.text
    first = next(iter(spec.dataloader))
    # The second sample is 2..6: its id 4 ends document 0, so 5 and 6 are document 1.
    assert first["sequence_id"][1, :5].tolist() == [0, 0, 0, 1, 1]


def test_text_loader_with_workers(token_mds: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    spec = build_text_dataloader(
        tokenizer,
        3,
        {"local": str(token_mds), "split": "train", "max_seq_len": 16},
        drop_last=False,
        num_workers=1,
        pin_memory=False,
        persistent_workers=False,
    )
    shapes = [tuple(b["input_ids"].shape) for b in spec.dataloader]
    assert shapes == [(3, 16), (3, 16), (2, 16)]


def test_text_loader_mixes_streams(
    tmp_path: Path, token_mds: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    other = write_samples(
        tmp_path / "other",
        {"tokens": "ndarray:int32"},
        [{"tokens": np.arange(7, dtype=np.int32)}] * 4,
    )
    streams: dict[str, dict[str, object]] = {
        "main": {"local": str(token_mds), "split": "train"},
        "extra": {"local": str(other)},
    }
    spec = build_text_dataloader(
        tokenizer, 2, {"streams": streams, "max_seq_len": 16}, num_workers=0, pin_memory=False
    )
    assert isinstance(spec.dataloader, DataLoader)
    assert isinstance(spec.dataloader.dataset, StreamingTextDataset)
    assert spec.dataloader.dataset.num_samples == len(TOKEN_SAMPLES) + 4

    streams["extra"]["proportin"] = 0.5
    with pytest.raises(
        ConfigError,
        match=r"train_loader\.dataset\.streams\.extra\.proportin .*did you mean 'proportion'",
    ):
        build_text_dataloader(tokenizer, 2, {"streams": streams, "max_seq_len": 16}, num_workers=0)


def test_text_loader_ignores_unknown_keys_with_a_warning_and_rejects_missing_ones(
    token_mds: Path, tokenizer: PreTrainedTokenizerBase, caplog: pytest.LogCaptureFixture
) -> None:
    # As LLM Foundry's text loader, which drops them silently (older YAMLs set tokenizer_name).
    dataset = {"local": str(token_mds), "split": "train", "max_seq_len": 16, "shufle": True}
    with caplog.at_level(logging.WARNING, logger="llmfoundry.data.text_data"):
        spec = build_text_dataloader(
            tokenizer,
            2,
            {**dataset, "tokenizer_name": "gpt2"},
            num_workers=0,
            section="eval_loader",
        )
    assert [r.getMessage() for r in caplog.records] == [
        "eval_loader.dataset.shufle is ignored, as LLM Foundry ignores it: this loader's dataset "
        "takes no such key; did you mean 'shuffle'?",
        "eval_loader.dataset.tokenizer_name is ignored, as LLM Foundry ignores it: this loader's "
        "dataset takes no such key",
    ]
    loader = spec.dataloader
    assert isinstance(loader, DataLoader) and isinstance(loader.dataset, StreamingTextDataset)
    assert loader.dataset.shuffle is False
    with pytest.raises(ConfigError, match=r"train_loader\.dataset\.max_seq_len is missing"):
        build_text_dataloader(tokenizer, 2, {"local": str(token_mds)}, num_workers=0)
    good = {"local": str(token_mds), "split": "train", "max_seq_len": 16}
    with pytest.raises(
        ConfigError, match=r"^train_loader\.num_workers must be a non-negative int, got int -1$"
    ):
        build_text_dataloader(tokenizer, 2, good, num_workers=-1)
    with pytest.raises(
        ConfigError, match=r"^eval_loader\.timeout must be a non-negative float, got float -1\.0$"
    ):
        build_text_dataloader(
            tokenizer, 2, good, num_workers=0, timeout=-1.0, section="eval_loader"
        )


def test_text_loader_is_registered() -> None:
    assert registry.dataloaders.get("text") is build_text_dataloader


def test_sample_texts_decodes_with_a_tokenizer(tmp_path: Path, tokenizer_dir: Path) -> None:
    write_samples(
        tmp_path / "mds" / "val", {"text": "str"}, [{"text": "hello world"}, {"text": "x = 1"}]
    )
    lines = list(sample_texts(str(tmp_path / "mds"), "val", str(tokenizer_dir), 32))
    assert lines[1::2] == ["hello world", "x = 1"]


def test_preview_command_prints_headers_and_texts(
    tmp_path: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_samples(tmp_path / "mds" / "val", {"text": "str"}, [{"text": "hello world"}])
    argv = ["--local_path", str(tmp_path / "mds"), "--tokenizer", str(tokenizer_dir)]
    assert preview_main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "hello world" and out[0].startswith("--- ") and out[0].endswith(" tokens ---")


# --- Streaming features: remote cache, stream mixtures, shuffling, worker options, bad shards ---


def id_stream(folder: Path, first_id: int, count: int, **writer_kwargs: Any) -> Path:
    """``count`` one-token samples ``[first_id]``, ``[first_id + 1]``, ...: each names itself."""
    samples = [{"tokens": np.asarray([first_id + i], np.int32)} for i in range(count)]
    with MDSWriter(out=str(folder), columns={"tokens": "ndarray:int32"}, **writer_kwargs) as out:
        for sample in samples:
            out.write(sample)
    return folder


def epoch_ids(dataset: Iterable[torch.Tensor]) -> list[int]:
    """The sample ids of one pass over ``dataset`` (one-token samples)."""
    return [int(sample[0]) for sample in dataset]


def epoch_ids_full(dataset: Iterable[torch.Tensor]) -> list[list[int]]:
    """The samples of one pass over ``dataset``, as lists of ids."""
    return [sample.tolist() for sample in dataset]


def test_remote_is_streamed_into_an_empty_local_cache(
    tmp_path: Path, tokenizer_dir: Path, corpus_texts: list[str]
) -> None:
    text_dir = tmp_path / "text"
    text_dir.mkdir()
    for number, text in enumerate(corpus_texts[:3]):
        (text_dir / f"doc{number}.txt").write_text(text, encoding="utf-8")
    remote = tmp_path / "remote"
    convert_text_to_mds(str(tokenizer_dir), str(remote / "train"), str(text_dir), concat_tokens=32)
    remote_shards = sorted(p.name for p in (remote / "train").glob("shard.*"))
    direct = StreamingTextDataset(tokenizer=None, max_seq_len=32, local=str(remote), split="train")
    expected = [direct[i].tolist() for i in range(direct.num_samples)]
    del direct

    cache = tmp_path / "cache"
    cache.mkdir()
    streamed = StreamingTextDataset(
        tokenizer=None,
        max_seq_len=32,
        remote=str(remote),
        local=str(cache),
        split="train",
        batch_size=1,
    )
    assert epoch_ids_full(streamed) == expected
    cached_shards = sorted(p.name for p in (cache / "train").glob("shard.*"))
    assert remote_shards and all(name.endswith(".zstd") for name in remote_shards)
    # The compressed shards were downloaded and decompressed into the cache.
    assert [name.removesuffix(".zstd") for name in remote_shards] == cached_shards
    assert (cache / "train" / "index.json").is_file()


def test_stream_proportions_set_each_streams_share_of_the_epoch(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    id_stream(tmp_path / "small" / "train", 1000, 20)
    id_stream(tmp_path / "large" / "train", 2000, 10)
    # MPT-7B's data-mix style: named streams with remote/local/split/proportion, and an epoch
    # size. Streaming draws floor(epoch_size * proportion) samples from each stream (40 * 1/4 =
    # 10 of small's 20, without repeats; 40 * 3/4 = 30 of large's 10: each 3 times).
    section = OmegaConf.to_container(
        OmegaConf.create(
            f"""
            name: text
            dataset:
              max_seq_len: 8
              epoch_size: 40
              shuffle: true
              streams:
                small:
                  remote: {tmp_path / "small"}
                  local: {tmp_path / "cache" / "small"}
                  split: train
                  proportion: 0.25
                large:
                  remote: {tmp_path / "large"}
                  local: {tmp_path / "cache" / "large"}
                  split: train
                  proportion: 0.75
            drop_last: false
            num_workers: 0
            pin_memory: false
            """
        )
    )
    assert isinstance(section, dict)
    # OmegaConf types a container's keys as any YAML key; this section's are all strings.
    spec = build_dataloader_from_section(
        "train_loader", cast(dict[str, Any], section), tokenizer, 4
    )
    ids = [int(i) for batch in spec.dataloader for i in batch["input_ids"][:, 0]]

    small = [i for i in ids if i < 2000]
    large = [i for i in ids if i >= 2000]
    assert (len(small), len(large)) == (10, 30)
    assert len(set(small)) == 10 and set(small) <= set(range(1000, 1020))
    assert Counter(large) == {2000 + i: 3 for i in range(10)}


@pytest.mark.parametrize(
    ("weights", "expected_counts"),
    [
        # repeat: a multiple of the stream's own size; a stream without weights is read once.
        ({"large": {"repeat": 2}}, (20, 20)),
        # choose: an absolute number of samples per epoch (more than the stream holds: every
        # sample once, then 5 of them again).
        ({"small": {"choose": 5}, "large": {"choose": 15}}, (5, 15)),
    ],
)
def test_stream_repeat_and_choose_set_absolute_counts(
    tmp_path: Path,
    weights: dict[str, dict[str, Any]],
    expected_counts: tuple[int, int],
) -> None:
    id_stream(tmp_path / "small", 1000, 20)
    id_stream(tmp_path / "large", 2000, 10)
    streams = [
        Stream(local=str(tmp_path / name), **weights.get(name, {})) for name in ("small", "large")
    ]
    dataset = StreamingTextDataset(tokenizer=None, max_seq_len=8, streams=streams, batch_size=1)
    ids = epoch_ids(dataset)

    small = Counter(i for i in ids if i < 2000)
    large = Counter(i for i in ids if i >= 2000)
    assert (sum(small.values()), sum(large.values())) == expected_counts
    if "repeat" in weights.get("large", {}):
        assert large == {2000 + i: 2 for i in range(10)}
        assert small == {1000 + i: 1 for i in range(20)}
    else:
        assert max(small.values()) == 1
        assert set(large) == set(range(2000, 2010))
        assert sorted(large.values()) == [1] * 5 + [2] * 5


def test_text_and_token_samples_from_the_converters_give_the_expected_ids(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    documents = ["def f(x):\n    return x + 1\n", "import os\n" * 20, "x = 1\n"]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents), "utf-8")
    convert_dataset_json(str(jsonl), str(tmp_path / "text" / "train"))
    convert_dataset_json(
        str(jsonl),
        str(tmp_path / "tokens" / "train"),
        concat_tokens=16,
        tokenizer=str(tokenizer_dir),
    )

    common: dict[str, Any] = {"max_seq_len": 16, "split": "train", "batch_size": 1}
    as_text = StreamingTextDataset(tokenizer=tokenizer, local=str(tmp_path / "text"), **common)
    ids = [tokenizer(d)["input_ids"] for d in documents]
    assert epoch_ids_full(as_text) == [i[:16] for i in ids]
    assert len(ids[1]) > 16  # the long document really was truncated

    as_tokens = StreamingTextDataset(tokenizer=None, local=str(tmp_path / "tokens"), **common)
    concatenated = [token for i in ids for token in i]
    expected = [concatenated[s : s + 16] for s in range(0, len(concatenated) - 15, 16)]
    assert epoch_ids_full(as_tokens) == expected


def test_zero_workers_drops_worker_options_with_one_note(
    token_mds: Path, tokenizer: PreTrainedTokenizerBase, caplog: pytest.LogCaptureFixture
) -> None:
    section = {
        "name": "text",
        "dataset": {"local": str(token_mds), "split": "train", "max_seq_len": 16},
        "num_workers": 0,
        "prefetch_factor": 2,
        "persistent_workers": True,
        "pin_memory": False,
    }
    with caplog.at_level(logging.INFO, logger="llmfoundry.data.text_data"):
        spec = build_dataloader_from_section("eval_loader", section, tokenizer, 4)
    assert len(list(spec.dataloader)) == 2
    notes = [r.getMessage() for r in caplog.records if "num_workers is 0" in r.getMessage()]
    assert notes == [
        "num_workers is 0 (batches load in the main process), so eval_loader.prefetch_factor and "
        "eval_loader.persistent_workers, which only apply to worker processes, are ignored"
    ]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="llmfoundry.data.text_data"):
        build_dataloader_from_section("eval_loader", {**section, "num_workers": 1}, tokenizer, 4)
        build_dataloader_from_section(
            "eval_loader",
            {
                k: v
                for k, v in section.items()
                if k not in ("prefetch_factor", "persistent_workers")
            },
            tokenizer,
            4,
        )
    assert not [r for r in caplog.records if "num_workers is 0" in r.getMessage()]


def test_seeded_shuffle_is_deterministic_and_differs_from_file_order(tmp_path: Path) -> None:
    id_stream(tmp_path / "mds", 0, 64)

    def order(**shuffle: Any) -> list[int]:
        dataset = StreamingTextDataset(
            tokenizer=None, max_seq_len=4, local=str(tmp_path / "mds"), batch_size=1, **shuffle
        )
        return epoch_ids(dataset)

    unshuffled = order()
    seeded = order(shuffle=True, shuffle_seed=17)
    assert unshuffled == list(range(64))
    assert seeded == order(shuffle=True, shuffle_seed=17)
    assert seeded != unshuffled and sorted(seeded) == unshuffled
    assert order(shuffle=True, shuffle_seed=18) != seeded


def test_sequence_id_counts_documents_from_eos_or_bos() -> None:
    samples = [torch.tensor([5, 0, 6, 7, 0, 8]), torch.tensor([0, 9, 9])]
    eos_batch = CausalLMCollator(pad_token_id=PAD_ID, eos_token_id=0)(samples)
    assert eos_batch["sequence_id"].tolist() == [[0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 1, 1]]
    bos_batch = CausalLMCollator(pad_token_id=PAD_ID, bos_token_id=0)(samples)
    assert bos_batch["sequence_id"].tolist() == [[0, 1, 1, 1, 2, 2], [1, 1, 1, 1, 1, 1]]
    assert "sequence_id" not in CausalLMCollator(pad_token_id=PAD_ID)(samples)
    with pytest.raises(ConfigError, match="only one of dataset.eos_token_id and"):
        CausalLMCollator(pad_token_id=PAD_ID, eos_token_id=0, bos_token_id=0)


def test_truncated_shard_is_named_when_the_dataset_is_built(tmp_path: Path) -> None:
    id_stream(tmp_path / "mds", 0, 200, size_limit=1024)
    shard = tmp_path / "mds" / "shard.00001.mds"
    shard.write_bytes(shard.read_bytes()[:100])

    with pytest.raises(DatasetError) as error:
        StreamingTextDataset(tokenizer=None, max_seq_len=4, local=str(tmp_path / "mds"))
    message = str(error.value)
    assert "\n" not in message
    assert re.search(r"shard file .*shard\.00001\.mds has 100 bytes but its index\.json", message)
    assert "convert the dataset again" in message and "validate_hash" in message


def test_corrupted_compressed_shard_is_named_when_read(tmp_path: Path) -> None:
    id_stream(tmp_path / "mds", 0, 200, size_limit=1024, compression="zstd")
    shard = tmp_path / "mds" / "shard.00001.mds.zstd"
    shard.write_bytes(bytes(len(shard.read_bytes())))  # same size, all zeros

    dataset = StreamingTextDataset(
        tokenizer=None, max_seq_len=4, local=str(tmp_path / "mds"), batch_size=1
    )
    with pytest.raises(DatasetError) as error:
        epoch_ids(dataset)
    message = str(error.value)
    assert "\n" not in message
    assert "shard.00001.mds.zstd" in message and "truncated or corrupted" in message


def test_stop_persistent_workers_ends_them_now_and_the_loader_still_iterates() -> None:
    data = torch.utils.data.TensorDataset(torch.arange(8))
    loader = DataLoader(data, batch_size=4, num_workers=2, persistent_workers=True)
    before = set(multiprocessing.active_children())
    assert next(iter(loader))[0].tolist() == [0, 1, 2, 3]
    started = set(multiprocessing.active_children()) - before
    assert len(started) == 2  # held by the loader after the batch
    stop_persistent_workers(loader)
    assert not started & set(multiprocessing.active_children())
    assert [batch[0].tolist() for batch in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    stop_persistent_workers(loader)
    stop_persistent_workers([1, 2])  # not a DataLoader: nothing to stop
