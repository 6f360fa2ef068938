"""The ``contrastive_pairs`` loader: MDS samples of a query, its positive and hard negatives,
tokenized and batched as ``(batch, texts, max_seq_len)`` the way LLM Foundry 0.22 batches them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from composer.core import DataSpec
from streaming import MDSWriter
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.command_utils.preflight import check_loader_section
from llmfoundry.data.contrastive_pairs import (
    StreamingPairsDataset,
    collate_pairs,
    contrastive_texts,
)
from llmfoundry.utils.exceptions import ConfigError, DatasetError

SEQ = 24


def write_rows(folder: Path, rows: list[dict[str, str]]) -> str:
    with MDSWriter(out=str(folder / "train"), columns=dict.fromkeys(rows[0], "str")) as writer:
        for row in rows:
            writer.write(row)
    return str(folder)


def triple(i: int, negatives: int = 3) -> dict[str, str]:
    return {
        "query_text": f"find {i}",
        "positive_passage": f"here is {i}",
        "negative_passages": json.dumps([f"not {i} but {n}" for n in range(negatives)]),
    }


def build(tokenizer: PreTrainedTokenizerBase, local: str, **dataset: object) -> DataSpec:
    section = {"local": local, "split": "train", "max_seq_len": SEQ, **dataset}
    return registry.dataloaders.get("contrastive_pairs")(
        tokenizer, 2, section, drop_last=False, num_workers=0, max_hard_negatives=2
    )


def test_sample_columns_give_query_positive_and_negatives() -> None:
    assert contrastive_texts({"text_a": "q", "text_b": "p"}, 0) == ("q", "p", [])
    sample = {"query_text": "q", "positive_passage": "p", "negative_passages": '["n1", "n2"]'}
    assert contrastive_texts(sample, 0) == ("q", "p", ["n1", "n2"])
    with pytest.raises(DatasetError, match=r"^sample 3 has columns text; a contrastive pair"):
        contrastive_texts({"text": "x"}, 3)
    with pytest.raises(DatasetError, match=r"^sample 1: negative_passages is not JSON"):
        contrastive_texts({**sample, "negative_passages": "[oops"}, 1)


def test_batches_hold_the_prefixed_texts_padded_to_max_seq_len(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    local = write_rows(tmp_path, [triple(i) for i in range(4)])
    spec = build(tokenizer, local, prepend_query="q: ", prepend_passage="p: ", append_token="!")
    batch = next(iter(spec.dataloader))
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"].shape == (2, 4, SEQ)  # query, positive, 2 of 3 negatives
    texts = ["q: find 1!", "p: here is 1!", "p: not 1 but 0!", "p: not 1 but 1!"]
    for row, text in zip(batch["input_ids"][1], texts, strict=True):
        ids = tokenizer(text)["input_ids"]
        assert row[: len(ids)].tolist() == ids
        assert row[len(ids) :].eq(tokenizer.convert_tokens_to_ids("<|pad|>")).all()
    assert spec.get_num_tokens_in_batch(batch) == int(batch["attention_mask"].sum())


def test_eos_append_and_seeded_negative_shuffle(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    local = write_rows(tmp_path, [triple(i, negatives=6) for i in range(2)])
    spec = build(tokenizer, local, append_eos_token=True, shuffle_hard_negatives=True)
    assert isinstance(spec.dataloader, DataLoader)
    dataset = spec.dataloader.dataset
    assert isinstance(dataset, StreamingPairsDataset)
    eos = str(tokenizer.eos_token)
    texts = dataset.texts(dataset.get_item(1), 1)
    # Seeded by (shuffle_seed, sample index): the same order in every worker and epoch.
    negatives = [f"not 1 but {n}" for n in range(6)]
    np.random.default_rng((9176, 1)).shuffle(negatives)
    assert texts == [f"find 1{eos}", f"here is 1{eos}", *(f"{n}{eos}" for n in negatives[:2])]
    assert texts[2:] != [f"not 1 but {n}{eos}" for n in range(2)]
    assert dataset.texts(dataset.get_item(1), 1) == texts
    exclusive = r"^train_loader\.dataset\.append_eos_token and train_loader\.dataset\.append_token"
    with pytest.raises(ConfigError, match=exclusive):
        build(tokenizer, local, append_eos_token=True, append_token="!")


def test_bad_sections_and_uneven_samples_are_named(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    local = write_rows(tmp_path, [triple(0)])
    with pytest.raises(ConfigError, match=r"^train_loader\.dataset\.eos_token_id is not taken"):
        build(tokenizer, local, eos_token_id=0)
    with pytest.raises(ConfigError, match=r"train_loader\.dataset\.prepend_qury is not a valid"):
        build(tokenizer, local, prepend_qury="q")
    section = {"name": "contrastive_pairs", "dataset": {"local": local, "max_seq_len": SEQ}}
    with pytest.raises(ConfigError, match=r"^train_loader\.drop_last is missing; it is required"):
        check_loader_section("train_loader", {**section, "num_workers": 0})
    loader = {**section, "drop_last": False, "num_workers": 0}
    check_loader_section("train_loader", loader)
    for key, value, message in [
        ("prepend_query", 3, r"prepend_query must be str, got int 3"),
        ("max_hard_negatives", 2, r"max_hard_negatives is not a valid key"),
        ("shuffle_seed", -1, r"shuffle_seed must be a non-negative int"),
    ]:
        bad = {**loader, "dataset": {**section["dataset"], key: value}}
        with pytest.raises(ConfigError, match=rf"^train_loader\.dataset\.{message}"):
            check_loader_section("train_loader", bad)
    one, two = ([[1] * 3, [2] * 3], [[1] * 3, [2] * 3, [3] * 3])
    with pytest.raises(DatasetError, match="mixes samples of 2 and 3 texts"):
        collate_pairs(
            [{"input_ids": one, "attention_mask": one}, {"input_ids": two, "attention_mask": two}]
        )
    assert collate_pairs([{"input_ids": one, "attention_mask": one}])["input_ids"].shape == (
        1,
        2,
        3,
    )
