"""StreamingTextDataset, the causal-LM collator and the ``text`` data loader."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from streaming import MDSWriter
from streaming.base.util import clean_stale_shared_memory
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.data import CausalLMCollator, StreamingTextDataset, build_text_dataloader
from llmfoundry.data.text_data import print_samples
from llmfoundry.utils.exceptions import ConfigError, DatasetError

PAD_ID = 1
# Token samples of different lengths; the last is longer than the loaders' max_seq_len of 16.
TOKEN_SAMPLES = [list(range(2, 2 + n)) for n in (16, 5, 16, 9, 16, 3, 16, 40)]


@pytest.fixture(autouse=True, scope="module")
def _clean_shared_memory() -> None:
    clean_stale_shared_memory()


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
def test_legacy_bytes_columns_are_decoded(tmp_path: Path, dtype: str) -> None:
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
    with pytest.raises(ConfigError, match="did you mean 'int64'"):
        StreamingTextDataset(
            tokenizer=None, max_seq_len=8, local=str(token_mds), token_encoding_type="int61"
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
    assert spec.dataloader.dataset.eos_token_id == 0  # type: ignore[attr-defined]


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
    assert spec.dataloader.dataset.num_samples == len(TOKEN_SAMPLES) + 4  # type: ignore[attr-defined]

    streams["extra"]["proportin"] = 0.5
    with pytest.raises(
        ConfigError,
        match=r"train_loader\.dataset\.streams\.extra\.proportin .*did you mean 'proportion'",
    ):
        build_text_dataloader(tokenizer, 2, {"streams": streams, "max_seq_len": 16}, num_workers=0)


def test_text_loader_rejects_unknown_and_missing_keys(
    token_mds: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    dataset = {"local": str(token_mds), "split": "train", "max_seq_len": 16, "shufle": True}
    with pytest.raises(
        ConfigError,
        match=r"eval_loader\.dataset\.shufle is not a valid key; did you mean 'shuffle'",
    ):
        build_text_dataloader(tokenizer, 2, dataset, num_workers=0, section="eval_loader")
    with pytest.raises(ConfigError, match=r"train_loader\.dataset\.max_seq_len is missing"):
        build_text_dataloader(tokenizer, 2, {"local": str(token_mds)}, num_workers=0)


def test_text_loader_is_registered() -> None:
    assert registry.dataloaders.get("text") is build_text_dataloader


def test_print_samples_decodes_with_a_tokenizer(
    tmp_path: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_samples(
        tmp_path / "mds" / "val", {"text": "str"}, [{"text": "hello world"}, {"text": "x = 1"}]
    )
    print_samples(str(tmp_path / "mds"), "val", str(tokenizer_dir), 32)
    assert capsys.readouterr().out.splitlines()[1::2] == ["hello world", "x = 1"]
