"""``contrastive_lm`` and ``finetune_embedding_model``: InfoNCE over pooled embeddings of each
sample's query, positive and hard negatives, as LLM Foundry 0.22 computes it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel, PreTrainedTokenizerBase

from llmfoundry import registry
from llmfoundry.models.llm_embed import (
    ContrastiveEvalLoss,
    ContrastiveModel,
    FinetuneEmbeddingModel,
)
from llmfoundry.models.llm_embed.modeling_llm_embed import (
    contrastive_targets,
    pool_embeddings,
    split_queries_and_passages,
)
from llmfoundry.utils.config_components import check_component
from llmfoundry.utils.exceptions import ConfigError, DatasetError
from tests.fixtures import TEXT_MPT, VOCAB, randomize

PAD = 1  # the fixture tokenizer's <|pad|>
LENGTHS = [[5, 7, 3], [8, 4, 6]]  # real tokens of each text (query, positive, negative)


def padded_batch(seq: int = 10) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(2, VOCAB, (2, 3, seq), generator=generator)
    positions = torch.arange(seq)
    mask = (positions < torch.tensor(LENGTHS)[..., None]).long()
    return {"input_ids": ids.masked_fill(mask == 0, PAD), "attention_mask": mask}


def test_pooling_splitting_and_targets_by_hand() -> None:
    hidden = torch.tensor(
        [[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]], [[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]]]
    )
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert pool_embeddings(hidden, mask, "avg").tolist() == [[2.0, 3.0], [2.0, 4.0]]
    assert pool_embeddings(hidden, mask, "eos").tolist() == [[3.0, 4.0], [4.0, 8.0]]
    queries, passages = split_queries_and_passages(torch.arange(6), 3)
    assert queries.tolist() == [0, 3] and passages.tolist() == [1, 2, 4, 5]
    assert contrastive_targets(2, 4, torch.device("cpu")).tolist() == [0, 2]


def network(model: ContrastiveModel) -> torch.nn.Module:
    """The wrapped network."""
    assert isinstance(model.model, torch.nn.Module)
    return model.model


def unpadded_texts(batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Each text of ``padded_batch`` without its padding, as a one-row batch."""
    lengths = [n for row in LENGTHS for n in row]
    rows = batch["input_ids"].flatten(0, 1)
    return [ids[None, :length] for ids, length in zip(rows, lengths, strict=True)]


def embeddings(model: ContrastiveModel, batch: dict[str, torch.Tensor], how: str) -> torch.Tensor:
    """Each text run alone, without padding, pooled by hand: one row per text."""
    rows = []
    for ids in unpadded_texts(batch):
        hidden = network(model)(ids, output_hidden_states=True).hidden_states[-1][0]
        rows.append(hidden.mean(0) if how == "avg" else hidden[-1])
    return F.normalize(torch.stack(rows), dim=-1)


@pytest.mark.parametrize(("how", "temperature"), [("avg", 1.0), ("eos", 0.05)])
def test_loss_is_infonce_over_each_queries_positive(
    tokenizer: PreTrainedTokenizerBase, how: str, temperature: float
) -> None:
    config = {"vector_representation": how, "temperature": temperature}
    model = ContrastiveModel(tokenizer, contrastive_config=config, **TEXT_MPT)
    randomize(network(model)).eval()
    batch = padded_batch()
    with torch.no_grad():
        loss = model.loss(model(batch), batch)
        vectors = embeddings(model, batch, how)
    queries, passages = vectors[[0, 3]], vectors[[1, 2, 4, 5]]
    expected = F.cross_entropy(queries @ passages.T / temperature, torch.tensor([0, 2]))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_a_hugging_face_causal_lm_is_pooled_from_its_final_hidden_states(
    tokenizer: PreTrainedTokenizerBase, tiny_llama_dir: Path
) -> None:
    model = ContrastiveModel(
        tokenizer,
        contrastive_config={"vector_representation": "eos"},
        pretrained_model_name_or_path=str(tiny_llama_dir),
        use_flash_attention_2=False,
    ).eval()
    batch = padded_batch()
    with torch.no_grad():
        loss = model.loss(model(batch), batch)
        vectors = embeddings(model, batch, "eos")
    expected = F.cross_entropy(vectors[[0, 3]] @ vectors[[1, 2, 4, 5]].T, torch.tensor([0, 2]))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_eval_metric_averages_batch_losses(tokenizer: PreTrainedTokenizerBase) -> None:
    assert registry.models.get("contrastive_lm") is ContrastiveModel
    model = ContrastiveModel(tokenizer, **TEXT_MPT).eval()
    batch = padded_batch()
    metric = model.get_metrics(is_train=False)["ContrastiveEvalLoss"]
    assert isinstance(metric, ContrastiveEvalLoss) and model.get_metrics(is_train=True) == {}
    losses = []
    for seq in (10, 12):
        with torch.no_grad():
            out = model.eval_forward(padded_batch(seq))
        model.update_metric(batch, out, metric)
        losses.append(float(out["loss"]))
    assert float(metric.compute()) == pytest.approx(sum(losses) / 2)


def test_bad_settings_and_batches_are_named(tokenizer: PreTrainedTokenizerBase) -> None:
    build = registry.models.get("contrastive_lm")
    with pytest.raises(ConfigError, match=r"model\.contrastive_config\.temprature is not a valid"):
        build(tokenizer, contrastive_config={"temprature": 2}, **TEXT_MPT)
    with pytest.raises(ConfigError, match=r"vector_representation must be one of"):
        build(tokenizer, contrastive_config={"vector_representation": "cls"}, **TEXT_MPT)
    # The run's config check reads the same from the signature, before anything is built.
    section = {"name": "contrastive_lm", "contrastive_config": {"temperature": 0}, **TEXT_MPT}
    with pytest.raises(ConfigError, match=r"^model\.contrastive_config\.temperature must be a"):
        check_component(registry.models, "model", section, reserved={"tokenizer"})
    with pytest.raises(ConfigError, match=r"^model\.d_model is not a key of contrastive_lm with"):
        build(tokenizer, pretrained_model_name_or_path="/nowhere", d_model=8)
    with pytest.raises(ConfigError, match=r"^model\.d_modl is not a valid key"):
        build(tokenizer, **{**TEXT_MPT, "d_modl": 8})
    model = build(tokenizer, **TEXT_MPT)
    with pytest.raises(DatasetError, match=r"must be \(batch, texts, seq\).*got shape \(2, 10\)"):
        model({"input_ids": torch.ones(2, 10, dtype=torch.long)})


def test_finetune_embedding_model_pools_an_encoders_last_hidden_state(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(tmp_path / "bert")
    assert registry.models.get("finetune_embedding_model") is FinetuneEmbeddingModel
    model = FinetuneEmbeddingModel(
        tokenizer, pretrained_model_name_or_path=str(tmp_path / "bert"), use_flash_attention_2=False
    ).eval()
    batch = padded_batch()
    with torch.no_grad():
        loss = model.loss(model(batch), batch)
        rows = [network(model)(ids).last_hidden_state[0].mean(0) for ids in unpadded_texts(batch)]
    vectors = F.normalize(torch.stack(rows), dim=-1)
    expected = F.cross_entropy(vectors[[0, 3]] @ vectors[[1, 2, 4, 5]].T, torch.tensor([0, 2]))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="pretrained_model_name_or_path is missing"):
        registry.models.get("finetune_embedding_model")(tokenizer)
